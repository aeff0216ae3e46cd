-- The inbox records when each message was handled by the code's clock, so
-- that its clean-up compares against a time the code passes in; rows
-- recorded before keep their handled_at.
ALTER TABLE {{.Inbox}} ADD COLUMN handled_ns INTEGER NOT NULL DEFAULT 0;
UPDATE {{.Inbox}} SET handled_ns = CAST((julianday(handled_at) - 2440587.5) * 86400000000000 AS INTEGER);
CREATE INDEX {{.InboxHandledIndex}} ON {{.Inbox}} (handled_ns);
