-- When a saga was created, by the store's clock, so that the repair tools
-- list the newest first (a saga's id is random). 0 for the sagas created
-- before this migration: they list after the others.
ALTER TABLE {{.Sagas}} ADD COLUMN created_ns BIGINT NOT NULL DEFAULT 0;
CREATE INDEX {{.CreatedIndex}} ON {{.Sagas}} (created_ns);
