-- The schema both backends share. Timestamps are microseconds since the Unix epoch (UTC); JSON columns hold canonical JSON text.
CREATE TABLE workspaces (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    created_at        BIGINT NOT NULL,
    -- bumped by every policy change, so replicas notice within their refresh interval
    policy_generation BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE members (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id),
    email         TEXT NOT NULL,
    name          TEXT,
    password_hash TEXT,
    roles         TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    UNIQUE (workspace_id, email)
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    name         TEXT NOT NULL,
    scope        TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX api_keys_by_workspace ON api_keys (workspace_id, created_at);
CREATE INDEX api_keys_by_revocation ON api_keys (revoked_at);

CREATE TABLE policies (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    name         TEXT NOT NULL,
    version      BIGINT NOT NULL,
    enabled      BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, name)
);

CREATE TABLE policy_versions (
    workspace_id TEXT NOT NULL,
    name         TEXT NOT NULL,
    version      BIGINT NOT NULL,
    document     TEXT NOT NULL,
    format       TEXT NOT NULL,
    enabled      BIGINT NOT NULL,
    author       TEXT NOT NULL,
    source       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, name, version)
);

CREATE TABLE evaluations (
    id              TEXT PRIMARY KEY,
    workspace_id    TEXT NOT NULL REFERENCES workspaces(id),
    key_id          TEXT,
    agent_id        TEXT NOT NULL,
    action          TEXT NOT NULL,
    resource        TEXT,
    amount_cents    BIGINT NOT NULL,
    cost_cents      BIGINT NOT NULL,
    params          TEXT NOT NULL,
    context         TEXT NOT NULL,
    trace           TEXT,
    idempotency_key TEXT,
    webhook_url     TEXT,
    decision        TEXT NOT NULL,
    status          TEXT NOT NULL,
    reason          TEXT NOT NULL,
    matched_rules   TEXT NOT NULL,
    errors          TEXT NOT NULL,
    approval        TEXT,
    current_stage   BIGINT,
    policy_versions TEXT NOT NULL,
    proposal_hash   TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX evaluations_by_workspace ON evaluations (workspace_id, id);
CREATE INDEX evaluations_by_status ON evaluations (workspace_id, status, id);
CREATE INDEX evaluations_by_agent ON evaluations (workspace_id, agent_id, id);

CREATE TABLE evaluation_stages (
    evaluation_id TEXT NOT NULL REFERENCES evaluations(id),
    idx           BIGINT NOT NULL,
    workspace_id  TEXT NOT NULL,
    name          TEXT NOT NULL,
    approvers     TEXT NOT NULL,
    required      BIGINT NOT NULL,
    channels      TEXT NOT NULL,
    timeout_secs  BIGINT,
    on_timeout    TEXT NOT NULL,
    status        TEXT NOT NULL,
    started_at    BIGINT,
    expires_at    BIGINT,
    decided_at    BIGINT,
    PRIMARY KEY (evaluation_id, idx)
);
CREATE INDEX evaluation_stages_by_deadline ON evaluation_stages (status, expires_at);

CREATE TABLE idempotency_keys (
    workspace_id  TEXT NOT NULL,
    key           TEXT NOT NULL,
    evaluation_id TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, key)
);

CREATE TABLE agent_costs (
    workspace_id TEXT NOT NULL,
    agent_id     TEXT NOT NULL,
    day          TEXT NOT NULL,
    cents        BIGINT NOT NULL,
    evaluations  BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, agent_id, day)
);

CREATE TABLE audit_heads (
    workspace_id TEXT PRIMARY KEY REFERENCES workspaces(id),
    seq          BIGINT NOT NULL,
    hash         TEXT NOT NULL
);

CREATE TABLE audit_events (
    workspace_id  TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    occurred_at   BIGINT NOT NULL,
    type          TEXT NOT NULL,
    actor         TEXT NOT NULL,
    evaluation_id TEXT,
    data          TEXT NOT NULL,
    prev_hash     TEXT NOT NULL,
    hash          TEXT NOT NULL,
    PRIMARY KEY (workspace_id, seq)
);
CREATE INDEX audit_events_by_evaluation ON audit_events (evaluation_id) WHERE evaluation_id IS NOT NULL;
