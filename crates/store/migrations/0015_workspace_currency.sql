-- The currency a workspace's amounts (`amount_cents`, `cost_cents`, spend) are in: an ISO 4217
-- code. Messages and pages show amounts with it.
ALTER TABLE workspaces ADD COLUMN currency TEXT NOT NULL DEFAULT 'USD';
