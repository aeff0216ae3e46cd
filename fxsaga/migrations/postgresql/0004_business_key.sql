-- A saga's business key (Saga.KeyBy): the booking or order it is about,
-- so that it is found by it (Reader.ByKey). active_key holds it while the
-- saga is unfinished and is NULL after, so that its unique index lets one
-- unfinished saga of a definition have a key at a time.
ALTER TABLE {{.Sagas}} ADD COLUMN business_key TEXT NOT NULL DEFAULT '';
ALTER TABLE {{.Sagas}} ADD COLUMN active_key TEXT;
CREATE INDEX {{.KeyIndex}} ON {{.Sagas}} (name, business_key);
CREATE UNIQUE INDEX {{.ActiveKeyIndex}} ON {{.Sagas}} (name, active_key);
