-- Human approval: a secure link per approver and stage (only its hash is kept), and each
-- human decision.
CREATE TABLE approval_links (
    token_hash     TEXT PRIMARY KEY,
    workspace_id   TEXT NOT NULL REFERENCES workspaces(id),
    evaluation_id  TEXT NOT NULL REFERENCES evaluations(id),
    stage_idx      BIGINT NOT NULL,
    approver       TEXT NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT,
    otp_hash       TEXT,
    otp_expires_at BIGINT,
    otp_attempts   BIGINT NOT NULL DEFAULT 0,
    locked_at      BIGINT,
    created_at     BIGINT NOT NULL
);
CREATE INDEX approval_links_by_evaluation ON approval_links (evaluation_id);

CREATE TABLE approval_decisions (
    evaluation_id TEXT NOT NULL REFERENCES evaluations(id),
    stage_idx     BIGINT NOT NULL,
    approver      TEXT NOT NULL,
    workspace_id  TEXT NOT NULL,
    decision      TEXT NOT NULL,
    comment       TEXT,
    decided_at    BIGINT NOT NULL,
    PRIMARY KEY (evaluation_id, stage_idx, approver)
);
