-- Tenants: each row's tenant, from its metadata ("tenant"; '' for the
-- default tenant), as a column the database computes, so that the relay
-- can give each tenant of a lane its share of a pass without reading the
-- metadata of rows it will not send. SQLite computes it when read; its
-- index stores it.
ALTER TABLE {{.Outbox}} ADD COLUMN msg_tenant TEXT NOT NULL GENERATED ALWAYS AS (COALESCE(json_extract(metadata, '$.tenant'), '')) VIRTUAL;
CREATE INDEX {{.OutboxTenantIndex}} ON {{.Outbox}} (topic, lane, msg_tenant, id);
-- The dead letters, inbound and outbound, and the schedules have it too:
-- the repair tools select by tenant; every repair records the tenant of
-- what it repaired.
ALTER TABLE {{.DeadLetters}} ADD COLUMN msg_tenant TEXT NOT NULL GENERATED ALWAYS AS (COALESCE(json_extract(metadata, '$.tenant'), '')) VIRTUAL;
CREATE INDEX {{.DeadLettersTenantIndex}} ON {{.DeadLetters}} (msg_tenant);
ALTER TABLE {{.InboundDead}} ADD COLUMN msg_tenant TEXT NOT NULL GENERATED ALWAYS AS (COALESCE(json_extract(metadata, '$.tenant'), '')) VIRTUAL;
CREATE INDEX {{.InboundDeadTenantIndex}} ON {{.InboundDead}} (msg_tenant);
ALTER TABLE {{.Scheduled}} ADD COLUMN msg_tenant TEXT NOT NULL GENERATED ALWAYS AS (COALESCE(json_extract(metadata, '$.tenant'), '')) VIRTUAL;
CREATE INDEX {{.ScheduledTenantIndex}} ON {{.Scheduled}} (msg_tenant);
ALTER TABLE {{.Repairs}} ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
-- The lane leases consumer replicas share a topic's lanes by, on a broker
-- that keeps none of its own (RabbitMQ): a value and its revision, written
-- by compare-and-set.
CREATE TABLE IF NOT EXISTS {{.LaneLeases}} (
    name  TEXT    NOT NULL PRIMARY KEY,
    value TEXT    NOT NULL,
    rev   INTEGER NOT NULL
);
-- The rate limits subscriptions share across replicas (a message type's,
-- a tenant's or a key's): the theoretical arrival time of each limit's
-- next message (GCRA), in nanoseconds by the services' clock.
CREATE TABLE IF NOT EXISTS {{.RateLimits}} (
    name   TEXT   NOT NULL PRIMARY KEY,
    tat_ns BIGINT NOT NULL
);
