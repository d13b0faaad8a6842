-- Analytics (SPEC §8): every UTC hour's evaluations per agent, action and decision, with their
-- cost, added up by the evaluation list's catch-up as `agent_costs` is, so that a report over a
-- period reads its whole hours here and only its partial first and last hours (and the chain's
-- tail) evaluation by evaluation.
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

-- What the list has caught up with so far.
INSERT INTO evaluation_hours (workspace_id, hour, agent_id, action, decision, evaluations, cost_cents)
    SELECT a.workspace_id, (a.occurred_at / 3600000000) * 3600000000,
           a.data::json ->> 'agent_id', a.data::json ->> 'action', a.data::json ->> 'decision', COUNT(*), SUM((a.data::json ->> 'cost_cents')::bigint)
    FROM audit_events a JOIN audit_heads h ON h.workspace_id = a.workspace_id
    WHERE a.type = 'evaluation.created' AND a.seq <= h.indexed_seq
    GROUP BY 1, 2, 3, 4, 5;
