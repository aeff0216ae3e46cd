-- Versions: each stored message's event name and version on the wire,
-- from its metadata ("name", "version"), as indexed columns computed by
-- the database, so that every row, those written before included, has
-- them, and the start check (and fxcqrs versions) lists the versions
-- present without reading a payload. A row without a version was written
-- before versions existed: version 1. One whose version is not a decimal
-- integer is version 0, which no upcaster chain reaches.
-- PostgreSQL stores the columns: adding them rewrites each table once.
ALTER TABLE {{.Outbox}} ADD COLUMN msg_name TEXT NOT NULL GENERATED ALWAYS AS (COALESCE(CAST(metadata AS json) ->> 'name', '')) STORED;
ALTER TABLE {{.Outbox}} ADD COLUMN msg_version INTEGER NOT NULL GENERATED ALWAYS AS (CASE WHEN CAST(metadata AS json) ->> 'version' IS NULL THEN 1 WHEN CAST(metadata AS json) ->> 'version' ~ '^[0-9]{1,9}$' THEN CAST(CAST(metadata AS json) ->> 'version' AS INTEGER) ELSE 0 END) STORED;
CREATE INDEX {{.OutboxVersionIndex}} ON {{.Outbox}} (msg_name, msg_version);
ALTER TABLE {{.Scheduled}} ADD COLUMN msg_name TEXT NOT NULL GENERATED ALWAYS AS (COALESCE(CAST(metadata AS json) ->> 'name', '')) STORED;
ALTER TABLE {{.Scheduled}} ADD COLUMN msg_version INTEGER NOT NULL GENERATED ALWAYS AS (CASE WHEN CAST(metadata AS json) ->> 'version' IS NULL THEN 1 WHEN CAST(metadata AS json) ->> 'version' ~ '^[0-9]{1,9}$' THEN CAST(CAST(metadata AS json) ->> 'version' AS INTEGER) ELSE 0 END) STORED;
CREATE INDEX {{.ScheduledVersionIndex}} ON {{.Scheduled}} (msg_name, msg_version);
ALTER TABLE {{.DeadLetters}} ADD COLUMN msg_name TEXT NOT NULL GENERATED ALWAYS AS (COALESCE(CAST(metadata AS json) ->> 'name', '')) STORED;
ALTER TABLE {{.DeadLetters}} ADD COLUMN msg_version INTEGER NOT NULL GENERATED ALWAYS AS (CASE WHEN CAST(metadata AS json) ->> 'version' IS NULL THEN 1 WHEN CAST(metadata AS json) ->> 'version' ~ '^[0-9]{1,9}$' THEN CAST(CAST(metadata AS json) ->> 'version' AS INTEGER) ELSE 0 END) STORED;
CREATE INDEX {{.DeadLettersVersionIndex}} ON {{.DeadLetters}} (msg_name, msg_version);
ALTER TABLE {{.InboundDead}} ADD COLUMN msg_name TEXT NOT NULL GENERATED ALWAYS AS (COALESCE(CAST(metadata AS json) ->> 'name', '')) STORED;
ALTER TABLE {{.InboundDead}} ADD COLUMN msg_version INTEGER NOT NULL GENERATED ALWAYS AS (CASE WHEN CAST(metadata AS json) ->> 'version' IS NULL THEN 1 WHEN CAST(metadata AS json) ->> 'version' ~ '^[0-9]{1,9}$' THEN CAST(CAST(metadata AS json) ->> 'version' AS INTEGER) ELSE 0 END) STORED;
CREATE INDEX {{.InboundDeadVersionIndex}} ON {{.InboundDead}} (msg_name, msg_version);
