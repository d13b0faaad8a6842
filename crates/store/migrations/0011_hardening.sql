-- One-time codes sent per link (SPEC §5: at most 5; asking again never resets the count of
-- wrong codes), and deadline sweeps that skip a stage failing to end until a later time, so
-- one bad stage cannot hold up the others.
ALTER TABLE approval_links ADD COLUMN otp_sent BIGINT NOT NULL DEFAULT 0;
ALTER TABLE evaluation_stages ADD COLUMN sweep_after BIGINT;
ALTER TABLE evaluation_stages ADD COLUMN sweep_failures BIGINT NOT NULL DEFAULT 0;
