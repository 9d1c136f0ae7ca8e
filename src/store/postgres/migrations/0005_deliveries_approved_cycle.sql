-- The blocked cycle whose approval covered a user's disable or delete, kept while
-- that request has not succeeded: its retries need no new approval.
ALTER TABLE deliveries ADD COLUMN approved_cycle text;
