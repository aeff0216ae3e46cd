-- Each row records when it was written (a scheduled one: when it fell
-- due), and each dead letter when it failed, by the code's clock: the
-- relay's lag, the backlog's and the dead letters' ages compare against a
-- time the code passes in. Rows written before keep their timestamps.
ALTER TABLE {{.Outbox}} ADD COLUMN created_ns INTEGER NOT NULL DEFAULT 0;
UPDATE {{.Outbox}} SET created_ns = CAST((julianday(created_at) - 2440587.5) * 86400000000000 AS INTEGER);
ALTER TABLE {{.DeadLetters}} ADD COLUMN failed_ns INTEGER NOT NULL DEFAULT 0;
UPDATE {{.DeadLetters}} SET failed_ns = CAST((julianday(failed_at) - 2440587.5) * 86400000000000 AS INTEGER);
