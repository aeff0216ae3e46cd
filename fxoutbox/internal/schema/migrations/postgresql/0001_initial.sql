-- fxcqrs outbox, PostgreSQL 13 or later. {{.Outbox}} and the other names
-- are the configured tables, validated and quoted.
CREATE TABLE IF NOT EXISTS {{.Outbox}} (
    id         BIGSERIAL PRIMARY KEY,
    topic      TEXT        NOT NULL,
    message_id TEXT        NOT NULL,
    payload    BYTEA       NOT NULL,
    metadata   TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS {{.OutboxIndex}} ON {{.Outbox}} (topic, id);
CREATE TABLE IF NOT EXISTS {{.DeadLetters}} (
    id         BIGINT      PRIMARY KEY,
    topic      TEXT        NOT NULL,
    message_id TEXT        NOT NULL,
    payload    BYTEA       NOT NULL,
    metadata   TEXT        NOT NULL,
    error      TEXT        NOT NULL,
    failed_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {{.Leases}} (
    topic    TEXT   PRIMARY KEY,
    owner    TEXT   NOT NULL,
    until_ns BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS {{.Inbox}} (
    handler    TEXT        NOT NULL,
    message_id TEXT        NOT NULL,
    handled_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (handler, message_id)
);
