-- Enterprise sign-in (SPEC §11): each workspace's SSO connection, the e-mail domains routed to
-- it, the sign-ins sent to an identity provider and not yet back, and the SAML assertions
-- already used. Secrets are ciphertext the server hands in, never plain text.
CREATE TABLE sso_connections (
    workspace_id TEXT PRIMARY KEY REFERENCES workspaces(id),
    -- `oidc` or `saml`.
    protocol     TEXT NOT NULL,
    -- The connection as JSON, sealed with the server key (an OIDC client secret is inside).
    settings     TEXT NOT NULL,
    required     BIGINT NOT NULL,
    jit          BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

-- A domain routes to one workspace's provider.
CREATE TABLE sso_domains (
    domain       TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id)
);
CREATE INDEX sso_domains_by_workspace ON sso_domains (workspace_id);

-- A sign-in sent to the provider: keyed by the OIDC state (hashed) or the SAML request's ID;
-- used once, within its lifetime. `secrets` (sealed) holds the nonce and PKCE verifier.
CREATE TABLE sso_requests (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    secrets      TEXT NOT NULL,
    expires_at   BIGINT NOT NULL,
    used_at      BIGINT
);
CREATE INDEX sso_requests_expiry ON sso_requests (expires_at);

-- SAML assertions already used, until they would have expired anyway: every replica refuses
-- a second use.
CREATE TABLE sso_assertions (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    assertion_id TEXT NOT NULL,
    expires_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, assertion_id)
);
CREATE INDEX sso_assertions_expiry ON sso_assertions (expires_at);

-- A session signed in through a workspace's provider acts in that workspace only.
ALTER TABLE sessions ADD COLUMN sso_workspace_id TEXT;
