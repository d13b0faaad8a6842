-- A delivery retried by hand after it was given up starts a fresh schedule: the retry horizon
-- and the backoff count from the retry, not from when it was first queued.
ALTER TABLE jobs ADD COLUMN retried_at BIGINT;
ALTER TABLE jobs ADD COLUMN attempts_before_retry BIGINT NOT NULL DEFAULT 0;
