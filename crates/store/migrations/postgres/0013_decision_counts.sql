-- What 0012 added to the list, for what it has caught up with so far: the counts of
-- `decision_counts`, the actions of `evaluation_index` and their `evaluation_facets` ranges.
INSERT INTO decision_counts (workspace_id, day, decision, evaluations)
    SELECT a.workspace_id,
           to_char(to_timestamp(a.occurred_at / 1000000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
           a.data::json ->> 'decision', COUNT(*)
    FROM audit_events a JOIN audit_heads h ON h.workspace_id = a.workspace_id
    WHERE a.type = 'evaluation.created' AND a.seq <= h.indexed_seq
    GROUP BY 1, 2, 3;
UPDATE evaluation_index SET action = (
    SELECT a.data::json ->> 'action' FROM audit_events a
    WHERE a.workspace_id = evaluation_index.workspace_id AND a.seq = evaluation_index.seq);
INSERT INTO evaluation_facets (workspace_id, facet, lo_id, hi_id)
    SELECT workspace_id, 'action:' || action, id, id FROM evaluation_index
    WHERE action IS NOT NULL;
