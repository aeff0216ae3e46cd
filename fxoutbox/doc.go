// Package fxoutbox ties an fxcqrs mediator's routed events to the
// database commit: a transactional outbox with a relay, and an inbox. It is
// a module of its own (github.com/fxcqrs/fxcqrs/fxoutbox), on database/sql:
// PostgreSQL 13+ (pgx's stdlib driver), MySQL 8.0+ or MariaDB 10.6+, and
// SQLite 3.35+ (modernc.org/sqlite, pure Go) as the embedded default. It
// imports no driver: the application does.
//
// This is the reference; the guide's pages are the outbox and the inbox
// (https://github.com/fxcqrs/fxcqrs/blob/main/docs/outbox.md), durable events and schedules (https://github.com/fxcqrs/fxcqrs/blob/main/docs/durable.md),
// order per key (https://github.com/fxcqrs/fxcqrs/blob/main/docs/order.md) and repair (https://github.com/fxcqrs/fxcqrs/blob/main/docs/repair.md).
//
// # Unit of work
//
// Each command, and each event handler, runs in a transaction that begins
// before the handler; [Tx] gives it to the handler's repositories. When the
// handler succeeds, the routed events it emitted (see fxbus.Route) are
// written to the outbox table in that transaction, then it commits; the
// in-process event handlers run after the commit and see committed state.
// A failed handler, a failed outbox write or a failed commit rolls back,
// and the events go with it. A call made inside another's unit of work
// joins it: its writes and routed events go into the outer transaction.
// Requests run in a transaction only with Config.Requests (or the
// middleware scoped to them); without one, their routed events are
// written in a transaction of their own after they return, as event
// handlers' are. Streams are never wrapped: a stream item's routed events
// are written by the outbox's Forwarder, in a transaction of their own,
// after the item. Event handlers run without a transaction unless
// Config.EventTransactions (or the inbox, for inbound messages) gives them
// one; their routed follow-ups are written in a transaction of their own
// after they return, never published directly.
//
// # Relay
//
// The relay, started and stopped by the lifecycle, reads the outbox topic
// by topic, in id order, a batch at a time (RelayConfig.BatchSize),
// publishes the batch through the bus's publisher (at once when it is an
// fxbus.BatchPublisher, as natsjs is; else one message after another) and
// deletes the rows the broker acknowledged: at least once. It deletes them
// once per window, not per batch (RelayConfig.ProgressInterval, 100ms, or
// RelayConfig.ProgressRows, 1000 rows, whichever comes first; and when it
// gives a lane back or stops), in one statement fenced by the lane's
// lease, so that at low load its deletes do not add a commit, a WAL flush,
// to each command's; it skips the rows it has published and not deleted
// when it reads a lane, and never sends them again itself.
//
// A kill sends again what the relay had published and not deleted: per
// lane, at most ProgressRows + BatchSize - 1 rows (1099 with the
// defaults), those published within the last ProgressInterval (and the
// batch in hand). JetStream drops such copies by message id within its
// duplicate window (2 minutes by default); the inbox makes any copy
// harmless. A negative ProgressInterval deletes each batch as it is
// published: the bound is then one batch. A relay that lost a lane's lease
// deletes none of its rows: they are the new owner's to send and delete.
// Until they are deleted, published rows count in Backlog and Lag (a
// window at most).
//
// A commit in this process that wrote rows wakes the relay at once;
// polling (Config.Relay) finds rows of other processes and of a process
// that crashed. After a pass that sent rows, the next starts only once
// RelayConfig.Linger has passed since it began, so that commits gather
// into one pass; a relay whose last pass sent nothing starts at once.
//
// A relay owns a topic under a lease, so that several replicas relay side
// by side without sending one topic twice as a matter of course; its
// deletes are fenced by the lease, and a relay that dies leaves its topics
// to the others when the lease expires, 4s by default (the replicas'
// clocks must roughly agree). When a broker refuses message k of a batch
// and takes later ones, the rows from k on are sent again: those later
// ones reach the consumer before k, the one exception to the order below.
//
// Order is per topic: the relay sends a topic's committed rows in id
// order. Ids are taken when rows are inserted (a PostgreSQL BIGSERIAL, a
// MySQL or MariaDB AUTO_INCREMENT), not when they commit, so two
// overlapping transactions can commit against their ids' order: when the
// relay has already sent the row with the higher id, the lower one follows
// it, in the relay's next pass, before any row committed after it. Within
// one transaction, and between transactions that do not overlap, the order
// is the emit order. SQLite runs one writer at a time: there ids follow
// commits. Broker and connection failures are retried with backoff while
// rows wait; only a failure that RelayConfig.Undeliverable blames on the
// message moves its row to the dead letter table, with an error log.
//
// # SQLite
//
// On SQLite, run one replica, and open its pool with one connection
// (db.SetMaxOpenConns(1)): [Outbox.Start] refuses a SQLite pool that
// allows more. Why, and how to open the file, is in the production
// checklist
// (https://github.com/fxcqrs/fxcqrs/blob/main/docs/production.md#sqlites-single-writer).
//
// # Order per key: lanes
//
// A row whose message has a key (fxbus.KeyBy; the fxbus.MetadataKey
// metadata) goes in one of its topic's lanes, RelayConfig.Lanes of them (1
// by default; TopicLanes per topic), by a stable hash of the key (FNV-1a
// modulo the lanes: LaneOf); a row without a key goes in lane 0. Each lane
// is sent like a topic before: in id order, under a lease of its own,
// with fenced deletes. So a key's rows keep their order (the per-topic
// order above, within the key), while a topic's lanes go out side by side
// and the relays of several replicas share them: each takes its fair
// part, the lanes divided by the relays alive (each renews a member lease
// beside its lanes'), and gives back, between batches, what it holds
// beyond that part when another relay appears. A relay that dies leaves
// its lanes to the others when their leases expire, as topics before.
//
// A key's lane depends on the number of lanes: changing it while the
// topic has rows waiting could put a key's new rows in another lane than
// its old ones, which the relay might send after them. Change it on a
// drained topic (Admin.Backlog shows none of its rows), with every replica
// stopped or none writing to it. A scheduled keyed message keeps its lane
// while it waits, in the scheduled table, so that it holds nothing back:
// it joins its key's order when it falls due, behind every row of the key
// already in the lane.
//
// A row the relay dead-letters (only with RelayConfig.Undeliverable, or
// metadata that does not parse) does not hold its key back: the key's
// later rows go on. The order-keeping dead letter is the consumer's:
// under Module, the Admin is the bus's fxbus.Parking, so that a
// subscription with fxbus.InOrder parks a key's messages behind its first
// that failed for good, in the inbound dead letters table
// (DeadLetter.Key), while the other keys flow. Admin.Replay of such a
// letter, or Admin.Release of the whole key, releases it: the letters go
// back to their topic through the outbox, in their order and in their
// key's lane, and stay, marked released, until the subscription has
// handled them (a released letter that fails again parks the key again,
// in its place). Admin.Discard of a letter takes it out of the key's
// line. A replay carries the fxbus.MetadataReplay mark, which natsjs puts
// in the Nats-Msg-Id, so that JetStream does not drop it as a duplicate
// of the original within its window.
//
// # Inbox
//
// With Config.Inbox, an inbound message (fxbus.Subscribe) runs each event
// handler in a transaction that first records (handler, message id): a
// redelivered message skips the handlers that handled it, and only a
// handler that failed runs again. The inbox knows a handler by its type's
// name: [Outbox.Start] refuses two handlers of one type for an event it
// records.
//
// # Durable in-process events
//
// Without it, an event's in-process handlers run from memory after the
// commit: best-effort, lost if the process dies between the commit and
// them. Register the event type with [Durable] (or [DurableEvent] in
// Config.Deliverables) and its handlers run from a row written in the
// emitting transaction instead: the relay of any replica delivers it
// after the commit, each handler's effect once through the inbox, failed
// handlers retried with a backoff and dead-lettered after
// DeliveryConfig.MaxAttempts. What that changes for the caller (Exec does
// not wait for them, nested calls' and sequential order) is on
// [DurableEvent].
//
// # Scheduled messages
//
// [Schedule], [ScheduleAfter] and [Cancel], from a handler in a unit of
// work, write a message with a due time (in the Scheduled table, in the
// handler's transaction) or delete one still waiting. When it is due by
// Config.Now, a loop beside the relay moves it into the outbox (one
// replica at a time, under a lease: two replicas share the schedules as
// a failover, not a spread — one moves them all while its lease holds,
// and another takes over within the lease when it dies) and wakes the
// relay; there it takes its
// place in its topic after every row already there: a scheduled message
// joins its topic's order at its due time. It is a routed event
// (published), a durable event (its handlers run) or a command registered
// with [Schedulable] (Exec runs it, once per schedule through the inbox).
// It is never delivered before its time, and at least once after it:
// within the relay's poll interval when another replica wrote it, sooner
// when this process did (it sets a timer for the earliest schedule it
// wrote). There is no cross-process wake such as LISTEN/NOTIFY: the
// poll bounds it. Finding the due rows is an index range scan, whatever
// the number waiting.
//
// The relay compares due times and leases in SQL against Config.Now, and
// waits between passes, after a failure and for the next schedule with
// Config.After: by default the wall clock's timers; a test that gives Now
// and After from one fake clock (outboxtest.Clock) moves the relay by
// moving that clock, and a retry after a failed pass waits for it too.
//
// The latest time a schedule takes is [LatestSchedule] (2262-04-11: its
// nanoseconds since 1970 must fit an int64); fxsaga's waits end within
// fxsaga.MaxWithin. A [Cancel] that meets the move of its schedule waits
// for it and answers false; it fails only with the database (a lost
// connection, or a deadlock with the caller's own other writes).
//
// # Schema
//
// The schema is numbered migrations per dialect, shipped in the module.
// [Migrate] applies the ones not yet applied, recorded in the Migrations
// table, under a lock that a second replica waits for; [Migrations] lists
// them for your own migration tool (each records itself), and [Schema] is
// all of them. Nothing is created behind the application's back at run
// time: [Outbox.Start] checks that the schema is at the version the code
// needs ([CheckSchema]) and fails with what to do when it is not. Table
// names are configurable, up to 63 characters, validated as SQL
// identifiers and quoted; index names derived from them always fit.
//
// The inbox's records are kept for Config.InboxRetention and then
// deleted in bounded batches ([Outbox.CleanInbox], which every replica
// runs beside its relay when it starts and then every 10 minutes by the
// outbox's clock).
package fxoutbox
