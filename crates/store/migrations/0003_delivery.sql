-- The durable job queue every outbound side effect goes through, and webhook signing secrets.
CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    workspace_id    TEXT NOT NULL REFERENCES workspaces(id),
    kind            TEXT NOT NULL,
    evaluation_id   TEXT,
    payload         TEXT NOT NULL,
    -- queued | running | done | dead
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    lease_until     BIGINT,
    locked_by       TEXT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX jobs_due ON jobs (status, next_attempt_at);
CREATE INDEX jobs_by_evaluation ON jobs (evaluation_id) WHERE evaluation_id IS NOT NULL;

CREATE TABLE delivery_attempts (
    job_id        TEXT NOT NULL REFERENCES jobs(id),
    attempt       BIGINT NOT NULL,
    workspace_id  TEXT NOT NULL,
    attempted_at  BIGINT NOT NULL,
    status_code   BIGINT,
    latency_ms    BIGINT NOT NULL,
    error         TEXT,
    response_body TEXT,
    PRIMARY KEY (job_id, attempt)
);

-- Ciphertext only; the current secret has no expiry, a rotated one signs for 24 more hours.
CREATE TABLE webhook_secrets (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    secret       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT
);
CREATE UNIQUE INDEX webhook_secrets_current ON webhook_secrets (workspace_id) WHERE expires_at IS NULL;
