-- Analytics (SPEC §8): every UTC hour's evaluations per agent, action and decision, with their
-- cost, so that a report over a period reads its whole hours here and only its partial first
-- and last hours (and what is not summed yet) evaluation by evaluation. Summed by the servers'
-- refresh loops behind the chain, never in the writer's transactions: `analytics_heads.seq` is
-- how far each workspace's chain is summed.
CREATE TABLE evaluation_hours (
    workspace_id TEXT NOT NULL,
    hour         BIGINT NOT NULL,
    agent_id     TEXT NOT NULL,
    action       TEXT NOT NULL,
    decision     TEXT NOT NULL,
    evaluations  BIGINT NOT NULL,
    cost_cents   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, hour, agent_id, action, decision)
);

-- The same per policy whose rules matched (an evaluation counts once for each such policy).
CREATE TABLE policy_hours (
    workspace_id TEXT NOT NULL,
    hour         BIGINT NOT NULL,
    policy       TEXT NOT NULL,
    decision     TEXT NOT NULL,
    evaluations  BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, hour, policy, decision)
);

CREATE TABLE analytics_heads (
    workspace_id TEXT PRIMARY KEY,
    seq          BIGINT NOT NULL
);

-- Everything the evaluation list has caught up with (sums never run ahead of it).
INSERT INTO evaluation_hours (workspace_id, hour, agent_id, action, decision, evaluations, cost_cents)
    SELECT a.workspace_id, (a.occurred_at / 3600000000) * 3600000000,
           a.data ->> 'agent_id', a.data ->> 'action', a.data ->> 'decision', COUNT(*), SUM(CAST(a.data ->> 'cost_cents' AS BIGINT))
    FROM audit_events a JOIN audit_heads h ON h.workspace_id = a.workspace_id
    WHERE a.type = 'evaluation.created' AND a.seq <= h.indexed_seq
    GROUP BY 1, 2, 3, 4, 5;
INSERT INTO policy_hours (workspace_id, hour, policy, decision, evaluations)
    SELECT workspace_id, hour, policy, decision, COUNT(*) FROM (
        SELECT DISTINCT a.workspace_id, a.seq, (a.occurred_at / 3600000000) * 3600000000 AS hour,
               j.value ->> 'policy' AS policy, a.data ->> 'decision' AS decision
        FROM audit_events a JOIN audit_heads h ON h.workspace_id = a.workspace_id, json_each(a.data, '$.matched_rules') j
        WHERE a.type = 'evaluation.created' AND a.seq <= h.indexed_seq) AS m
    GROUP BY workspace_id, hour, policy, decision;
INSERT INTO analytics_heads (workspace_id, seq) SELECT workspace_id, indexed_seq FROM audit_heads;
