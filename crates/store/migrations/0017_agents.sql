-- The agent inventory and the kill switch (SPEC §8). Every agent_id seen is a row, added up
-- by the evaluation list's catch-up as `agent_costs` is (first and last seen, how many
-- evaluations); the descriptive fields are set by people; a suspended agent is denied
-- whatever the policies say. Suspending, like a policy change, bumps the workspace's
-- `policy_generation`, so every server's cache picks it up within its refresh interval.
CREATE TABLE agents (
    workspace_id     TEXT NOT NULL REFERENCES workspaces(id),
    agent_id         TEXT NOT NULL,
    first_seen       BIGINT,
    last_seen        BIGINT,
    evaluations      BIGINT NOT NULL DEFAULT 0,
    owner            TEXT,
    purpose          TEXT,
    model            TEXT,
    tools            TEXT,
    risk_tier        TEXT,
    suspended_at     BIGINT,
    suspended_by     TEXT,
    suspended_reason TEXT,
    updated_at       BIGINT,
    PRIMARY KEY (workspace_id, agent_id)
);
CREATE INDEX agents_suspended ON agents (workspace_id) WHERE suspended_at IS NOT NULL;

-- Every agent the list has caught up with so far.
INSERT INTO agents (workspace_id, agent_id, first_seen, last_seen, evaluations)
    SELECT i.workspace_id, i.agent_id, MIN(a.occurred_at), MAX(a.occurred_at), COUNT(*)
    FROM evaluation_index i JOIN audit_events a ON a.workspace_id = i.workspace_id AND a.seq = i.seq
    GROUP BY i.workspace_id, i.agent_id;

-- What a halt ends: the pending evaluations of a workspace (of an agent), without reading the
-- decided ones.
CREATE INDEX evaluations_pending ON evaluations (workspace_id, agent_id) WHERE status = 'pending';

-- The whole workspace's kill switch: engaged while `kill_switch_at` is set.
ALTER TABLE workspaces ADD COLUMN kill_switch_at BIGINT;
ALTER TABLE workspaces ADD COLUMN kill_switch_by TEXT;
ALTER TABLE workspaces ADD COLUMN kill_switch_reason TEXT;
