-- What lists and filters evaluations: one narrow row per evaluation, written in bulk behind the
-- audit chain instead of in every commit (see `audit::Chain::save`). An evaluation whose
-- `evaluation.created` event is past its workspace's `audit_heads.indexed_seq` is not here yet;
-- list queries read those few from the chain's tail.
CREATE TABLE evaluation_index (
    workspace_id TEXT NOT NULL,
    id           TEXT NOT NULL,
    agent_id     TEXT NOT NULL,
    status       TEXT NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX evaluation_index_by_agent ON evaluation_index (workspace_id, agent_id, id);
CREATE INDEX evaluation_index_by_status ON evaluation_index (workspace_id, status, id);

INSERT INTO evaluation_index (workspace_id, id, agent_id, status)
    SELECT workspace_id, id, agent_id, status FROM evaluations;
ALTER TABLE audit_heads ADD COLUMN indexed_seq BIGINT NOT NULL DEFAULT 0;
UPDATE audit_heads SET indexed_seq = seq;

-- Each of these cost a page per commit (per distinct agent, for the agent index).
DROP INDEX evaluations_by_workspace;
DROP INDEX evaluations_by_status;
DROP INDEX evaluations_by_agent;
