-- The chat channels a workspace has connected for approvals (Slack, Teams). Their settings
-- carry credentials (bot tokens, webhook URLs that post by themselves), so they are kept only
-- as ciphertext under the server key.
CREATE TABLE channel_settings (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    channel      TEXT NOT NULL,
    settings     TEXT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, channel)
);
