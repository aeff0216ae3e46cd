-- A saga's business key (Saga.KeyBy): the booking or order it is about,
-- so that it is found by it (Reader.ByKey). active_key holds it while the
-- saga is unfinished and is NULL after, so that its unique index lets one
-- unfinished saga of a definition have a key at a time. VARBINARY: a key
-- is compared byte for byte, as on the other databases ("A-1" is not
-- "a-1", and "7" is not "7 ", which even a _bin collation pads).
ALTER TABLE {{.Sagas}}
    ADD COLUMN business_key VARBINARY(255) NOT NULL DEFAULT '',
    ADD COLUMN active_key   VARBINARY(255) NULL,
    ADD KEY {{.KeyIndex}} (name, business_key),
    ADD UNIQUE KEY {{.ActiveKeyIndex}} (name, active_key);
