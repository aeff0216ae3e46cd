-- The repair tools: a dead letter can be discarded with its reason kept,
-- and every repairing action is recorded with who asked and why.
ALTER TABLE {{.DeadLetters}}
    ADD COLUMN discarded_ns   BIGINT        NOT NULL DEFAULT 0,
    ADD COLUMN discard_reason VARCHAR(1024) NOT NULL DEFAULT '';
CREATE TABLE {{.Repairs}} (
    id     BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    at_ns  BIGINT       NOT NULL,
    action VARCHAR(32)  NOT NULL,
    target TEXT         NOT NULL,
    who    VARCHAR(255) NOT NULL,
    why    TEXT         NOT NULL
) ENGINE = InnoDB;
-- A message an inbound subscription dead-lettered, recorded here too: a
-- broker such as RabbitMQ cannot browse its dead letter queue without
-- consuming it, and the in-process broker keeps nothing.
CREATE TABLE {{.InboundDead}} (
    id             BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    topic          VARCHAR(255)  NOT NULL,
    message_id     VARCHAR(64)   NOT NULL,
    payload        LONGBLOB      NOT NULL,
    metadata       TEXT          NOT NULL,
    error          TEXT          NOT NULL,
    failed_ns      BIGINT        NOT NULL,
    discarded_ns   BIGINT        NOT NULL DEFAULT 0,
    discard_reason VARCHAR(1024) NOT NULL DEFAULT ''
) ENGINE = InnoDB;
