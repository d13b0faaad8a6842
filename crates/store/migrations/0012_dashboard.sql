-- The dashboard (SPEC §11). A person signs in with one account across every workspace that
-- has them as a member, identified by e-mail: its password is set only by that person (the
-- first owner's at bootstrap or by the CLI, an invitation link, or changing it signed in), so
-- no workspace can set a password for someone who belongs to another.
CREATE TABLE accounts (
    email         TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
INSERT INTO accounts (email, password_hash, created_at, updated_at)
    SELECT m.email, m.password_hash, m.created_at, m.created_at FROM members m
    WHERE m.password_hash IS NOT NULL AND m.id = (SELECT MIN(o.id) FROM members o
        WHERE o.email = m.email AND o.password_hash IS NOT NULL);

-- A signed-in browser: the cookie's token, stored hashed; the workspace it looks at now.
CREATE TABLE sessions (
    token_hash   TEXT PRIMARY KEY,
    email        TEXT NOT NULL,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    created_at   BIGINT NOT NULL,
    seen_at      BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);
CREATE INDEX sessions_by_email ON sessions (email);

-- An invitation to set a password and sign in: single-use, expiring, stored hashed.
CREATE TABLE invitations (
    token_hash   TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    email        TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    used_at      BIGINT
);

-- The last verification of each workspace's chain, for pages that show it without rereading
-- millions of events.
CREATE TABLE chain_checks (
    workspace_id TEXT PRIMARY KEY REFERENCES workspaces(id),
    checked_at   BIGINT NOT NULL,
    ok           BIGINT NOT NULL,
    events       BIGINT NOT NULL,
    head_hash    TEXT,
    broken_at    BIGINT,
    reason       TEXT
);

-- The approvals inbox: a workspace's waiting stages, nearest deadline first.
CREATE INDEX evaluation_stages_waiting ON evaluation_stages (workspace_id, expires_at)
    WHERE status = 'waiting';

-- How each UTC day's evaluations were decided when proposed (`allow`, `deny`,
-- `require_approval`): the overview's counts, added up by the list's catch-up as `agent_costs`
-- is, so that no page counts a day's evaluations one by one. (Filled from the history by 0013.)
CREATE TABLE decision_counts (
    workspace_id TEXT NOT NULL,
    day          TEXT NOT NULL,
    decision     TEXT NOT NULL,
    evaluations  BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, day, decision)
);
