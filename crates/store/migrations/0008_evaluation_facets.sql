-- What a filtered list of evaluations scans: for each catch-up of `evaluation_index`, one row per
-- agent and per status among the evaluations it added, with the range of their ids, instead of
-- an index entry per evaluation per filter (the two indexes dropped here: with 128 evaluations a
-- catch-up, they were most of what keeping the index cost the writer). A filtered list walks its
-- agent's (or status's) ranges newest first, reading `evaluation_index` by its primary key within
-- each. A status change adds a one-evaluation range for the new status (see the triggers).
CREATE TABLE evaluation_facets (
    workspace_id TEXT NOT NULL,
    facet        TEXT NOT NULL,
    lo_id        TEXT NOT NULL,
    hi_id        TEXT NOT NULL,
    PRIMARY KEY (workspace_id, facet, hi_id)
);
INSERT INTO evaluation_facets (workspace_id, facet, lo_id, hi_id)
    SELECT workspace_id, 'agent:' || agent_id, id, id FROM evaluation_index;
INSERT INTO evaluation_facets (workspace_id, facet, lo_id, hi_id)
    SELECT workspace_id, 'status:' || status, id, id FROM evaluation_index;
DROP INDEX evaluation_index_by_agent;
DROP INDEX evaluation_index_by_status;
