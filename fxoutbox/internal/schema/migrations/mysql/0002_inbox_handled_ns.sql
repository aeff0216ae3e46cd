-- The inbox records when each message was handled by the code's clock, so
-- that its clean-up compares against a time the code passes in; rows
-- recorded before keep their handled_at.
ALTER TABLE {{.Inbox}} ADD COLUMN handled_ns BIGINT NOT NULL DEFAULT 0, ADD KEY {{.InboxHandledIndex}} (handled_ns);
UPDATE {{.Inbox}} SET handled_ns = CAST(UNIX_TIMESTAMP(handled_at) * 1000000000 AS SIGNED);
