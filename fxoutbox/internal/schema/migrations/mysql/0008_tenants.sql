-- Tenants: each row's tenant, from its metadata ("tenant"; '' for the
-- default tenant), as a column the database computes, so that the relay
-- can give each tenant of a lane its share of a pass without reading the
-- metadata of rows it will not send. A tenant id is at most 128 bytes
-- (fxbus.MaxTenantIDLength): a longer one, which a subscription
-- dead-letters, is kept cut there. Tenants and names compare byte for
-- byte (a binary collation): ACME is not acme.
ALTER TABLE {{.Outbox}} ADD COLUMN msg_tenant VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin AS (LEFT(COALESCE(JSON_UNQUOTE(JSON_EXTRACT(metadata, '$.tenant')), ''), 128)) STORED,
    ADD KEY {{.OutboxTenantIndex}} (topic, lane, msg_tenant, id);
-- The dead letters, inbound and outbound, and the schedules have it too:
-- the repair tools select by tenant; every repair records the tenant of
-- what it repaired.
ALTER TABLE {{.DeadLetters}} ADD COLUMN msg_tenant VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin AS (LEFT(COALESCE(JSON_UNQUOTE(JSON_EXTRACT(metadata, '$.tenant')), ''), 128)) STORED, ADD KEY {{.DeadLettersTenantIndex}} (msg_tenant);
ALTER TABLE {{.InboundDead}} ADD COLUMN msg_tenant VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin AS (LEFT(COALESCE(JSON_UNQUOTE(JSON_EXTRACT(metadata, '$.tenant')), ''), 128)) STORED, ADD KEY {{.InboundDeadTenantIndex}} (msg_tenant);
ALTER TABLE {{.Scheduled}} ADD COLUMN msg_tenant VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin AS (LEFT(COALESCE(JSON_UNQUOTE(JSON_EXTRACT(metadata, '$.tenant')), ''), 128)) STORED, ADD KEY {{.ScheduledTenantIndex}} (msg_tenant);
ALTER TABLE {{.Repairs}} ADD COLUMN tenant VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT '';
-- The lane leases consumer replicas share a topic's lanes by, on a broker
-- that keeps none of its own (RabbitMQ): a value and its revision, written
-- by compare-and-set.
CREATE TABLE IF NOT EXISTS {{.LaneLeases}} (
    name  VARCHAR(255)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
    value VARCHAR(1024) NOT NULL,
    rev   BIGINT        NOT NULL
) ENGINE = InnoDB;
-- The rate limits subscriptions share across replicas (a message type's,
-- a tenant's or a key's): the theoretical arrival time of each limit's
-- next message (GCRA), in nanoseconds by the services' clock.
CREATE TABLE IF NOT EXISTS {{.RateLimits}} (
    name   VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
    tat_ns BIGINT NOT NULL
) ENGINE = InnoDB;
