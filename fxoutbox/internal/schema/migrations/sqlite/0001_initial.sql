-- fxcqrs outbox, SQLite 3.35 or later.
CREATE TABLE IF NOT EXISTS {{.Outbox}} (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT    NOT NULL,
    message_id TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    metadata   TEXT    NOT NULL,
    created_at TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX IF NOT EXISTS {{.OutboxIndex}} ON {{.Outbox}} (topic, id);
CREATE TABLE IF NOT EXISTS {{.DeadLetters}} (
    id         INTEGER PRIMARY KEY,
    topic      TEXT    NOT NULL,
    message_id TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    metadata   TEXT    NOT NULL,
    error      TEXT    NOT NULL,
    failed_at  TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE IF NOT EXISTS {{.Leases}} (
    topic    TEXT    PRIMARY KEY,
    owner    TEXT    NOT NULL,
    until_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS {{.Inbox}} (
    handler    TEXT NOT NULL,
    message_id TEXT NOT NULL,
    handled_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (handler, message_id)
);
