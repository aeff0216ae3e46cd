-- Each row records when it was written (a scheduled one: when it fell
-- due), and each dead letter when it failed, by the code's clock: the
-- relay's lag, the backlog's and the dead letters' ages compare against a
-- time the code passes in. Rows written before keep their timestamps.
ALTER TABLE {{.Outbox}} ADD COLUMN created_ns BIGINT NOT NULL DEFAULT 0;
UPDATE {{.Outbox}} SET created_ns = CAST(EXTRACT(EPOCH FROM created_at) * 1000000000 AS BIGINT);
ALTER TABLE {{.DeadLetters}} ADD COLUMN failed_ns BIGINT NOT NULL DEFAULT 0;
UPDATE {{.DeadLetters}} SET failed_ns = CAST(EXTRACT(EPOCH FROM failed_at) * 1000000000 AS BIGINT);
