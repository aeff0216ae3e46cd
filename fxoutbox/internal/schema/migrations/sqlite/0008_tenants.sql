-- Tenants: each row's tenant, from its metadata ("tenant"; '' for the
-- default tenant), as a column the database computes, so that the relay
-- can give each tenant of a lane its share of a pass without reading the
-- metadata of rows it will not send. SQLite computes it when read; its
-- index stores it.
ALTER TABLE {{.Outbox}} ADD COLUMN msg_tenant TEXT NOT NULL GENERATED ALWAYS AS (COALESCE(json_extract(metadata, '$.tenant'), '')) VIRTUAL;
CREATE INDEX {{.OutboxTenantIndex}} ON {{.Outbox}} (topic, lane, msg_tenant, id);
-- The lane leases consumer replicas share a topic's lanes by, on a broker
-- that keeps none of its own (RabbitMQ): a value and its revision, written
-- by compare-and-set.
CREATE TABLE IF NOT EXISTS {{.LaneLeases}} (
    name  TEXT    NOT NULL PRIMARY KEY,
    value TEXT    NOT NULL,
    rev   INTEGER NOT NULL
);
