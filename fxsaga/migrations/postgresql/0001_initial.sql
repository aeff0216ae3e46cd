-- fxcqrs sagas, PostgreSQL 13 or later.
CREATE TABLE IF NOT EXISTS {{.Sagas}} (
    id             TEXT        PRIMARY KEY,
    name           TEXT        NOT NULL,
    status         TEXT        NOT NULL,
    step           INTEGER     NOT NULL,
    context        TEXT        NOT NULL,
    version        BIGINT      NOT NULL,
    error          TEXT        NOT NULL DEFAULT '',
    owner          TEXT        NOT NULL DEFAULT '',
    lease_until_ns BIGINT      NOT NULL DEFAULT 0,
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS {{.SagasIndex}} ON {{.Sagas}} (name, status);
CREATE TABLE IF NOT EXISTS {{.Log}} (
    id      BIGSERIAL   PRIMARY KEY,
    saga_id TEXT        NOT NULL,
    step    INTEGER     NOT NULL,
    action  TEXT        NOT NULL,
    error   TEXT        NOT NULL,
    at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
