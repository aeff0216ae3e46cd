-- Versions: each stored message's event name and version on the wire,
-- from its metadata ("name", "version"), as indexed columns computed by
-- the database, so that every row, those written before included, has
-- them, and the start check (and fxcqrs versions) lists the versions
-- present without reading a payload. A row without a version was written
-- before versions existed: version 1. One whose version is not a decimal
-- integer is version 0, which no upcaster chain reaches.
-- SQLite computes them when read (a column added to a table cannot be
-- stored there); their index stores them.
ALTER TABLE {{.Outbox}} ADD COLUMN msg_name TEXT NOT NULL GENERATED ALWAYS AS (COALESCE(json_extract(metadata, '$.name'), '')) VIRTUAL;
ALTER TABLE {{.Outbox}} ADD COLUMN msg_version INTEGER NOT NULL GENERATED ALWAYS AS (CASE WHEN json_extract(metadata, '$.version') IS NULL THEN 1 WHEN json_extract(metadata, '$.version') NOT GLOB '*[^0-9]*' AND length(json_extract(metadata, '$.version')) BETWEEN 1 AND 9 THEN CAST(json_extract(metadata, '$.version') AS INTEGER) ELSE 0 END) VIRTUAL;
CREATE INDEX {{.OutboxVersionIndex}} ON {{.Outbox}} (msg_name, msg_version);
ALTER TABLE {{.Scheduled}} ADD COLUMN msg_name TEXT NOT NULL GENERATED ALWAYS AS (COALESCE(json_extract(metadata, '$.name'), '')) VIRTUAL;
ALTER TABLE {{.Scheduled}} ADD COLUMN msg_version INTEGER NOT NULL GENERATED ALWAYS AS (CASE WHEN json_extract(metadata, '$.version') IS NULL THEN 1 WHEN json_extract(metadata, '$.version') NOT GLOB '*[^0-9]*' AND length(json_extract(metadata, '$.version')) BETWEEN 1 AND 9 THEN CAST(json_extract(metadata, '$.version') AS INTEGER) ELSE 0 END) VIRTUAL;
CREATE INDEX {{.ScheduledVersionIndex}} ON {{.Scheduled}} (msg_name, msg_version);
ALTER TABLE {{.DeadLetters}} ADD COLUMN msg_name TEXT NOT NULL GENERATED ALWAYS AS (COALESCE(json_extract(metadata, '$.name'), '')) VIRTUAL;
ALTER TABLE {{.DeadLetters}} ADD COLUMN msg_version INTEGER NOT NULL GENERATED ALWAYS AS (CASE WHEN json_extract(metadata, '$.version') IS NULL THEN 1 WHEN json_extract(metadata, '$.version') NOT GLOB '*[^0-9]*' AND length(json_extract(metadata, '$.version')) BETWEEN 1 AND 9 THEN CAST(json_extract(metadata, '$.version') AS INTEGER) ELSE 0 END) VIRTUAL;
CREATE INDEX {{.DeadLettersVersionIndex}} ON {{.DeadLetters}} (msg_name, msg_version);
ALTER TABLE {{.InboundDead}} ADD COLUMN msg_name TEXT NOT NULL GENERATED ALWAYS AS (COALESCE(json_extract(metadata, '$.name'), '')) VIRTUAL;
ALTER TABLE {{.InboundDead}} ADD COLUMN msg_version INTEGER NOT NULL GENERATED ALWAYS AS (CASE WHEN json_extract(metadata, '$.version') IS NULL THEN 1 WHEN json_extract(metadata, '$.version') NOT GLOB '*[^0-9]*' AND length(json_extract(metadata, '$.version')) BETWEEN 1 AND 9 THEN CAST(json_extract(metadata, '$.version') AS INTEGER) ELSE 0 END) VIRTUAL;
CREATE INDEX {{.InboundDeadVersionIndex}} ON {{.InboundDead}} (msg_name, msg_version);
