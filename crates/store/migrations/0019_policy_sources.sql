-- Policy-as-code (SPEC §9): a policy bound to a file in a GitHub repository, and each
-- workspace's push-webhook secret. Tokens and secrets are ciphertext the server hands in
-- (sealed with its key for their workspace and purpose), never plain text.
CREATE TABLE policy_sources (
    workspace_id   TEXT NOT NULL REFERENCES workspaces(id),
    name           TEXT NOT NULL,
    repo           TEXT NOT NULL,
    branch         TEXT NOT NULL,
    path           TEXT NOT NULL,
    token          TEXT NOT NULL,
    -- The ETag of the last answer for the branch's head: an unchanged branch costs one 304.
    etag           TEXT,
    -- The last sync, whatever came of it.
    synced_at      BIGINT,
    synced_commit  TEXT,
    sync_status    TEXT,
    sync_error     TEXT,
    -- When the schedule may next look (moved on by every look, and past a rate limit's reset).
    next_poll_at   BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, name)
);
CREATE INDEX policy_sources_due ON policy_sources (next_poll_at);

CREATE TABLE github_integrations (
    workspace_id   TEXT PRIMARY KEY REFERENCES workspaces(id),
    webhook_secret TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);

-- One version per commit of a policy, however many servers sync it at once.
CREATE UNIQUE INDEX policy_versions_git_commit ON policy_versions (workspace_id, name, source)
    WHERE source LIKE 'git:%';
