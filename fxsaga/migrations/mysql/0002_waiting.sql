-- Sagas that wait (fxsaga.Await): for which event and correlation, until
-- when, the scheduled message that times them out, and the waits whose
-- deadline passed and whose OnTimeout step ran.
ALTER TABLE {{.Sagas}}
    ADD COLUMN awaiting    VARCHAR(255)  NOT NULL DEFAULT '',
    ADD COLUMN correlation VARCHAR(255)  NOT NULL DEFAULT '',
    ADD COLUMN deadline_ns BIGINT        NOT NULL DEFAULT 0,
    ADD COLUMN timer       VARCHAR(64)   NOT NULL DEFAULT '',
    ADD COLUMN timed_out   VARCHAR(1024) NOT NULL DEFAULT '',
    ADD KEY {{.WaitingIndex}} (awaiting, correlation),
    ADD KEY {{.DeadlineIndex}} (status, name, deadline_ns);
