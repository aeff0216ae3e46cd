-- Tenants: each row's tenant, from its metadata ("tenant"; '' for the
-- default tenant), as a column the database computes, so that the relay
-- can give each tenant of a lane its share of a pass without reading the
-- metadata of rows it will not send.
ALTER TABLE {{.Outbox}} ADD COLUMN msg_tenant VARCHAR(128) AS (COALESCE(JSON_UNQUOTE(JSON_EXTRACT(metadata, '$.tenant')), '')) STORED,
    ADD KEY {{.OutboxTenantIndex}} (topic, lane, msg_tenant, id);
-- The lane leases consumer replicas share a topic's lanes by, on a broker
-- that keeps none of its own (RabbitMQ): a value and its revision, written
-- by compare-and-set.
CREATE TABLE IF NOT EXISTS {{.LaneLeases}} (
    name  VARCHAR(255)  NOT NULL PRIMARY KEY,
    value VARCHAR(1024) NOT NULL,
    rev   BIGINT        NOT NULL
) ENGINE = InnoDB;
