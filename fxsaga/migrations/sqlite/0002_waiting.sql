-- Sagas that wait (fxsaga.Await): for which event and correlation, until
-- when, the scheduled message that times them out, and the waits whose
-- deadline passed and whose OnTimeout step ran.
ALTER TABLE {{.Sagas}} ADD COLUMN awaiting TEXT NOT NULL DEFAULT '';
ALTER TABLE {{.Sagas}} ADD COLUMN correlation TEXT NOT NULL DEFAULT '';
ALTER TABLE {{.Sagas}} ADD COLUMN deadline_ns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE {{.Sagas}} ADD COLUMN timer TEXT NOT NULL DEFAULT '';
ALTER TABLE {{.Sagas}} ADD COLUMN timed_out TEXT NOT NULL DEFAULT '';
-- An event finds the sagas it resumes, and recovery the overdue ones,
-- through indexes of the waiting rows alone.
CREATE INDEX {{.WaitingIndex}} ON {{.Sagas}} (awaiting, correlation) WHERE status = 'WAITING';
CREATE INDEX {{.DeadlineIndex}} ON {{.Sagas}} (name, deadline_ns) WHERE status = 'WAITING';
