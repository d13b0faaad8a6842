-- Execution receipts (SPEC §8): what the executing system reports after acting on an
-- evaluation, one per evaluation, and whether it conforms to what was decided.
CREATE TABLE receipts (
    evaluation_id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    outcome TEXT NOT NULL,
    proposal_hash TEXT,
    detail TEXT NOT NULL,
    conforms BIGINT NOT NULL,
    problems TEXT NOT NULL,
    actor TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX receipts_by_workspace ON receipts (workspace_id, at);
