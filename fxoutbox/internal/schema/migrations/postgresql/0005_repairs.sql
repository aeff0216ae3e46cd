-- The repair tools: a dead letter can be discarded with its reason kept,
-- and every repairing action is recorded with who asked and why.
ALTER TABLE {{.DeadLetters}} ADD COLUMN discarded_ns BIGINT NOT NULL DEFAULT 0;
ALTER TABLE {{.DeadLetters}} ADD COLUMN discard_reason TEXT NOT NULL DEFAULT '';
CREATE TABLE {{.Repairs}} (
    id     BIGSERIAL PRIMARY KEY,
    at_ns  BIGINT NOT NULL,
    action TEXT   NOT NULL,
    target TEXT   NOT NULL,
    who    TEXT   NOT NULL,
    why    TEXT   NOT NULL
);
-- A message an inbound subscription dead-lettered, recorded here too: a
-- broker such as RabbitMQ cannot browse its dead letter queue without
-- consuming it, and the in-process broker keeps nothing.
CREATE TABLE {{.InboundDead}} (
    id             BIGSERIAL PRIMARY KEY,
    topic          TEXT   NOT NULL,
    message_id     TEXT   NOT NULL,
    payload        BYTEA  NOT NULL,
    metadata       TEXT   NOT NULL,
    error          TEXT   NOT NULL,
    failed_ns      BIGINT NOT NULL,
    discarded_ns   BIGINT NOT NULL DEFAULT 0,
    discard_reason TEXT   NOT NULL DEFAULT ''
);
