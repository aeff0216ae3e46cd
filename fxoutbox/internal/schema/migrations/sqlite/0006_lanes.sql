-- Order per key: a keyed row goes in one of its topic's lanes (by a hash
-- of its key; every row without a key in lane 0), and the relay sends each
-- lane in id order under a lease of its own, so that replicas share one
-- topic's lanes. The index serves the lane's batch and the loose index
-- scans of topics and lanes; the (topic, id) index it replaces is dropped.
ALTER TABLE {{.Outbox}} ADD COLUMN lane INTEGER NOT NULL DEFAULT 0;
CREATE INDEX {{.OutboxLaneIndex}} ON {{.Outbox}} (topic, lane, id);
DROP INDEX IF EXISTS {{.OutboxIndex}};
-- A scheduled row keeps its lane until it is due and joins it.
ALTER TABLE {{.Scheduled}} ADD COLUMN lane INTEGER NOT NULL DEFAULT 0;
-- An inbound dead letter keeps its message's key: while one of a key's
-- messages is dead-lettered and not yet released, a subscription that
-- keeps the key's order parks the key's later messages behind it.
ALTER TABLE {{.InboundDead}} ADD COLUMN msg_key TEXT NOT NULL DEFAULT '';
ALTER TABLE {{.InboundDead}} ADD COLUMN released_ns INTEGER NOT NULL DEFAULT 0;
CREATE INDEX {{.InboundDeadKeyIndex}} ON {{.InboundDead}} (topic, msg_key, id);
