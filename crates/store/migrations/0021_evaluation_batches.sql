-- Filtering evaluations by action and by policy. `evaluation_index` keeps each evaluation's
-- action and the policies whose rules matched it; `evaluation_batches` keeps, for each catch-up
-- of the index, the id range it covered and the agents, actions and policies in it. A list
-- filtered by action or policy walks the batches whose sets name them, newest first, and
-- reads `evaluation_index` by its primary key within each: one row per catch-up, where a facet
-- per action and per policy would cost the writer a page per distinct value. Sets are names
-- each between newlines (`\na\nb\n`, empty for none): no agent id, action or policy name holds
-- a newline, so `\nNAME\n` is found in a set only where NAME is one of its names.
ALTER TABLE evaluation_index ADD COLUMN action TEXT;
ALTER TABLE evaluation_index ADD COLUMN policies TEXT;
CREATE TABLE evaluation_batches (
    workspace_id TEXT NOT NULL,
    hi_id        TEXT NOT NULL,
    lo_id        TEXT NOT NULL,
    agents       TEXT NOT NULL,
    actions      TEXT NOT NULL,
    policies     TEXT NOT NULL,
    PRIMARY KEY (workspace_id, hi_id)
);
