-- Versions: each stored message's event name and version on the wire,
-- from its metadata ("name", "version"), as indexed columns computed by
-- the database, so that every row, those written before included, has
-- them, and the start check (and fxcqrs versions) lists the versions
-- present without reading a payload. A row without a version was written
-- before versions existed: version 1. One whose version is not a decimal
-- integer is version 0, which no upcaster chain reaches.
-- MySQL and MariaDB store the columns: adding them rewrites each table once.
ALTER TABLE {{.Outbox}} ADD COLUMN msg_name VARCHAR(255) AS (COALESCE(JSON_UNQUOTE(JSON_EXTRACT(metadata, '$.name')), '')) STORED,
    ADD COLUMN msg_version INT AS (CASE WHEN JSON_EXTRACT(metadata, '$.version') IS NULL THEN 1 WHEN JSON_UNQUOTE(JSON_EXTRACT(metadata, '$.version')) REGEXP '^[0-9]{1,9}$' THEN CAST(JSON_UNQUOTE(JSON_EXTRACT(metadata, '$.version')) AS UNSIGNED) ELSE 0 END) STORED,
    ADD KEY {{.OutboxVersionIndex}} (msg_name, msg_version);
ALTER TABLE {{.Scheduled}} ADD COLUMN msg_name VARCHAR(255) AS (COALESCE(JSON_UNQUOTE(JSON_EXTRACT(metadata, '$.name')), '')) STORED,
    ADD COLUMN msg_version INT AS (CASE WHEN JSON_EXTRACT(metadata, '$.version') IS NULL THEN 1 WHEN JSON_UNQUOTE(JSON_EXTRACT(metadata, '$.version')) REGEXP '^[0-9]{1,9}$' THEN CAST(JSON_UNQUOTE(JSON_EXTRACT(metadata, '$.version')) AS UNSIGNED) ELSE 0 END) STORED,
    ADD KEY {{.ScheduledVersionIndex}} (msg_name, msg_version);
ALTER TABLE {{.DeadLetters}} ADD COLUMN msg_name VARCHAR(255) AS (COALESCE(JSON_UNQUOTE(JSON_EXTRACT(metadata, '$.name')), '')) STORED,
    ADD COLUMN msg_version INT AS (CASE WHEN JSON_EXTRACT(metadata, '$.version') IS NULL THEN 1 WHEN JSON_UNQUOTE(JSON_EXTRACT(metadata, '$.version')) REGEXP '^[0-9]{1,9}$' THEN CAST(JSON_UNQUOTE(JSON_EXTRACT(metadata, '$.version')) AS UNSIGNED) ELSE 0 END) STORED,
    ADD KEY {{.DeadLettersVersionIndex}} (msg_name, msg_version);
ALTER TABLE {{.InboundDead}} ADD COLUMN msg_name VARCHAR(255) AS (COALESCE(JSON_UNQUOTE(JSON_EXTRACT(metadata, '$.name')), '')) STORED,
    ADD COLUMN msg_version INT AS (CASE WHEN JSON_EXTRACT(metadata, '$.version') IS NULL THEN 1 WHEN JSON_UNQUOTE(JSON_EXTRACT(metadata, '$.version')) REGEXP '^[0-9]{1,9}$' THEN CAST(JSON_UNQUOTE(JSON_EXTRACT(metadata, '$.version')) AS UNSIGNED) ELSE 0 END) STORED,
    ADD KEY {{.InboundDeadVersionIndex}} (msg_name, msg_version);
