-- What the index already holds gets its action and policies, and batches of 128 by seq.
UPDATE evaluation_index SET
    action = (SELECT a.data::json ->> 'action' FROM audit_events a
              WHERE a.workspace_id = evaluation_index.workspace_id AND a.seq = evaluation_index.seq),
    policies = COALESCE((SELECT E'\n' || string_agg(DISTINCT j.value ->> 'policy', E'\n') || E'\n'
        FROM audit_events a, json_array_elements(CASE
            WHEN json_typeof(a.data::json -> 'matched_rules') = 'array'
            THEN a.data::json -> 'matched_rules' ELSE '[]'::json END) j
        WHERE a.workspace_id = evaluation_index.workspace_id AND a.seq = evaluation_index.seq), '');
INSERT INTO evaluation_batches (workspace_id, hi_id, lo_id, agents, actions, policies)
    SELECT workspace_id, MAX(id), MIN(id), '', '', '' FROM evaluation_index
    GROUP BY workspace_id, seq / 128;
-- Each batch's sets from the rows in its range (a range may hold another batch's too: a
-- larger set only means a range read for nothing, never an evaluation missed).
UPDATE evaluation_batches b SET
    agents = E'\n' || (SELECT string_agg(DISTINCT i.agent_id, E'\n') FROM evaluation_index i
        WHERE i.workspace_id = b.workspace_id AND i.id >= b.lo_id AND i.id <= b.hi_id) || E'\n',
    actions = E'\n' || (SELECT string_agg(DISTINCT i.action, E'\n') FROM evaluation_index i
        WHERE i.workspace_id = b.workspace_id AND i.id >= b.lo_id AND i.id <= b.hi_id) || E'\n',
    policies = COALESCE((SELECT string_agg(DISTINCT i.policies, '') FROM evaluation_index i
        WHERE i.workspace_id = b.workspace_id AND i.id >= b.lo_id AND i.id <= b.hi_id), '');
