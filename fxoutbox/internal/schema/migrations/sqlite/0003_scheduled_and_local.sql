-- Rows the relay delivers in this process (durable in-process events,
-- scheduled commands) are retried with a backoff: when each is due again,
-- by the code's clock, and how many times its delivery failed.
ALTER TABLE {{.Outbox}} ADD COLUMN due_ns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE {{.Outbox}} ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
-- Scheduled messages wait here until they are due; the relay then moves
-- them into the outbox, where they take their place in their topic.
CREATE TABLE {{.Scheduled}} (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    due_ns     INTEGER NOT NULL,
    topic      TEXT    NOT NULL,
    message_id TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    metadata   TEXT    NOT NULL
);
CREATE INDEX {{.ScheduledDueIndex}} ON {{.Scheduled}} (due_ns, id);
CREATE INDEX {{.ScheduledIDIndex}} ON {{.Scheduled}} (message_id);
