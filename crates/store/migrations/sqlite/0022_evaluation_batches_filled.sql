-- What the index already holds gets its action and policies, and batches of 128 by seq.
UPDATE evaluation_index SET
    action = (SELECT a.data ->> 'action' FROM audit_events a
              WHERE a.workspace_id = evaluation_index.workspace_id AND a.seq = evaluation_index.seq),
    policies = COALESCE((SELECT char(10) || group_concat(p, char(10)) || char(10) FROM (
        SELECT DISTINCT j.value ->> 'policy' AS p
        FROM audit_events a, json_each(a.data, '$.matched_rules') j
        WHERE a.workspace_id = evaluation_index.workspace_id AND a.seq = evaluation_index.seq
        ORDER BY p)), '');
INSERT INTO evaluation_batches (workspace_id, hi_id, lo_id, agents, actions, policies)
    SELECT workspace_id, MAX(id), MIN(id), '', '', '' FROM evaluation_index
    GROUP BY workspace_id, seq / 128;
-- Each batch's sets from the rows in its range (a range may hold another batch's too: a
-- larger set only means a range read for nothing, never an evaluation missed).
UPDATE evaluation_batches SET
    agents = char(10) || (SELECT group_concat(v, char(10)) FROM (
        SELECT DISTINCT agent_id AS v FROM evaluation_index i
        WHERE i.workspace_id = evaluation_batches.workspace_id
          AND i.id >= evaluation_batches.lo_id AND i.id <= evaluation_batches.hi_id)) || char(10),
    actions = char(10) || (SELECT group_concat(v, char(10)) FROM (
        SELECT DISTINCT action AS v FROM evaluation_index i
        WHERE i.workspace_id = evaluation_batches.workspace_id
          AND i.id >= evaluation_batches.lo_id AND i.id <= evaluation_batches.hi_id)) || char(10),
    policies = COALESCE((SELECT group_concat(v, '') FROM (
        SELECT DISTINCT policies AS v FROM evaluation_index i
        WHERE i.workspace_id = evaluation_batches.workspace_id
          AND i.id >= evaluation_batches.lo_id AND i.id <= evaluation_batches.hi_id)), '');
