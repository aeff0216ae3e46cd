-- Rows the relay delivers in this process (durable in-process events,
-- scheduled commands) are retried with a backoff: when each is due again,
-- by the code's clock, and how many times its delivery failed.
ALTER TABLE {{.Outbox}} ADD COLUMN due_ns BIGINT NOT NULL DEFAULT 0, ADD COLUMN attempts INT NOT NULL DEFAULT 0;
-- Scheduled messages wait here until they are due; the relay then moves
-- them into the outbox, where they take their place in their topic.
CREATE TABLE {{.Scheduled}} (
    id         BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    due_ns     BIGINT       NOT NULL,
    topic      VARCHAR(255) NOT NULL,
    message_id VARCHAR(64)  NOT NULL,
    payload    LONGBLOB     NOT NULL,
    metadata   TEXT         NOT NULL,
    KEY {{.ScheduledDueIndex}} (due_ns, id),
    KEY {{.ScheduledIDIndex}} (message_id)
) ENGINE = InnoDB;
