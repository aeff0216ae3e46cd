-- fxcqrs sagas, SQLite 3.35 or later.
CREATE TABLE IF NOT EXISTS {{.Sagas}} (
    id             TEXT    PRIMARY KEY,
    name           TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    step           INTEGER NOT NULL,
    context        TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    error          TEXT    NOT NULL DEFAULT '',
    owner          TEXT    NOT NULL DEFAULT '',
    lease_until_ns INTEGER NOT NULL DEFAULT 0,
    updated_at     TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX IF NOT EXISTS {{.SagasIndex}} ON {{.Sagas}} (name, status);
CREATE TABLE IF NOT EXISTS {{.Log}} (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    saga_id TEXT    NOT NULL,
    step    INTEGER NOT NULL,
    action  TEXT    NOT NULL,
    error   TEXT    NOT NULL,
    at      TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP
);
