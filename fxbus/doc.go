// Package fxbus takes an fxcqrs mediator's events out of the process and
// brings other services' events in, through Watermill and any broker it
// speaks: NATS JetStream, RabbitMQ, Kafka, Redis Streams, SQL. It is a
// module of its own (github.com/fxcqrs/fxcqrs/fxbus), so that services that
// stay in one process never download Watermill.
//
// # Routes and subscriptions
//
//	fx.New(
//		fxcqrs.Module,
//		fxbus.Module,
//		fx.Provide(func() (message.Publisher, message.Subscriber) { ... }), // the broker
//		fxbus.Route[OrderPlaced]("orders"),                                 // out
//		fxbus.Subscribe[PaymentReceived]("payments"),                       // in
//		fxcqrs.AsCommandHandler(NewPlaceOrderHandler),
//		fxcqrs.AsEventHandler(NewShipOnPayment),
//	)
//
// A routed event that a handler emits is published once the handler and
// its whole middleware chain have succeeded (after a transaction that
// middleware commits), and before in-process event handlers run it; it is
// still processed in-process by its own handlers. Follow-ups that event
// handlers emit are routed the same way. An event that entered through a
// subscription is not routed out again; its handlers' follow-ups are.
//
// A subscribed message is decoded and processed with fxcqrs.Publish, in the
// foreground, under the mediator's limits like any event. It is
// acknowledged when Publish returns nil; retried in the process with
// backoff when it fails ([Retry]), then sent to a dead letter topic with
// the reason ([DeadLetter]); nacked for redelivery when the mediator is
// stopping or the message's context ended. A message that cannot be
// decoded goes to the dead letter at once. Processing is at least once: a
// redelivered message runs its handlers again (the outbox module's inbox
// runs each handler once per message id).
//
// Without fx, make a [Bus] with [New], [NewRoute] and [NewSubscription],
// pass it to fxcqrs.WithForwarder, and [Bus.Start] it with the mediator.
//
// # What a publish failure means: the dual write
//
// Without the outbox module, publishing is a second write beside the
// handler's own (its database transaction): the two can disagree. If the
// broker refuses the message, the call still returns its valid response,
// with a [*PublishError] naming the events that did not leave, and nothing
// retries them. If the process dies between the handler's commit and the
// publish, the events are lost without a word. If the handler's
// transaction rolls back after the chain returned (it should not: commit
// in middleware), the events have left anyway. The outbox module closes
// this window: it writes routed events in the handler's own transaction
// and a relay delivers them at least once.
//
// # Wire format
//
// The payload is the event, JSON by default ([Marshaler]). The metadata
// carries the event's stable name ([MetadataName]: its Go type's bare
// name unless [Name] sets one, so a package rename does not change it),
// the payload's content type, and the correlation and causation ids
// ([MetadataCorrelationID], [MetadataCausationID]). The message id is a
// UUIDv7. The correlation id is the id of the first message of a causal
// chain; each message's causation id is the id of the message whose
// handling emitted it. A consumer in another language reads the name to
// choose the type and the payload as JSON. Two types with one name are a
// startup error.
//
// Several event types may share a topic: each message goes to the
// subscription its name names; a name no subscription of the topic has is
// acknowledged and skipped.
//
// # Broker presets
//
// Three packages of this module make a broker's safe choices in one call,
// each failing at construction, naming the address, when the broker
// cannot be reached: natsjs (NATS JetStream, on nats.go), amqpbus
// (RabbitMQ, with publisher confirms on pooled channels) and redisbus
// (Redis Streams). Each returns one value that is both the
// message.Publisher and the message.Subscriber Module takes.
//
// # Brokers that state what they can do
//
// The bus works over any message.Publisher and message.Subscriber. When
// the adapter is also a [Broker] (the presets and [Embedded] are), [New],
// and so fx.New, runs each declared topic through [Broker.CheckTopic] and
// fails with an error for each refusal, naming topic, declarer and rule. A
// [Provisioner] gets the declared topics made at start, before the first
// publish through the bus, and a publish to a topic it never provisioned
// fails. A [FlowSubscriber] receives each subscription's [Flow]. When the
// broker will not subscribe, fx.Start returns its reason and stops what
// it started. The bus page says what each means for a service
// (https://github.com/fxcqrs/fxcqrs/blob/main/docs/bus.md#what-the-bus-asks-of-a-broker).
//
// # The in-process broker
//
// With no broker given, every bus of the process uses one [Embedded]
// broker, shared, so that two applications in one binary reach each other;
// it is not durable, and reaches no other process. Like a networked
// broker it bounds what each subscription holds and queues, and keeps
// publish order, so code written against the defaults meets the limits
// it will meet in production. What it bounds, what a publish
// waits for, what it drops and its payload limit are on its page
// (https://github.com/fxcqrs/fxcqrs/blob/main/docs/broker-embedded.md).
// A large event costs its encoding: its JSON is encoded once and decoded
// once, however often its handlers are retried.
//
// # Order per key
//
// A route may key its events, with a function of the event (the
// aggregate's id is the usual key):
//
//	fxbus.Route[OrderEvent]("orders", fxbus.KeyBy(func(e OrderEvent) string { return e.OrderID() }))
//
// The key travels in the [MetadataKey] metadata. Under the outbox module
// the relay sends each key's rows in their order, over a topic's lanes
// (see fxoutbox.RelayConfig.Lanes), which the replicas share. On the
// consuming side, a subscription with [InOrder] hands a key's messages to
// its handlers one after another and different keys in parallel, within
// [InFlight]; with the outbox module, a message of a key that fails for
// good parks the key's later messages behind it, and the other keys flow,
// until a replay releases them in order (see InOrder). Without a key, a
// topic keeps the order it always had. What each broker gives InOrder to
// work with: each preset hands a subscription up to InFlight messages at
// once and, with InOrder, redelivers a nacked message of a key ahead of
// that key's next ones, through a clean restart and a kill of the consuming
// process (for one consuming process at a time; Kafka keeps a key's order
// across replicas too, since a partition has one consumer). What holds per
// broker, and what bounds it, is in the order page
// (https://github.com/fxcqrs/fxcqrs/blob/main/docs/order.md#per-broker);
// package bustest checks each adapter's claims.
//
// # Fair shares and rate limits
//
// [FairShares] turns a topic's handler slots between its tenants or keys
// instead of serving arrivals first; [RateLimit] paces each key, tenant
// or type to a [Limit] (a GCRA with a stated burst), counting from the
// bus's clock. An over-budget message is held in memory, slot-free,
// until its [Limiter] lets it through, so no other key stalls behind
// it. Both read up to [Lookahead] messages past InFlight. One budget
// shared by all replicas lives in SQL: give [Config.Limiter]
// fxoutbox.NewSharedLimiter. Details and per-broker costs:
// https://github.com/fxcqrs/fxcqrs/blob/main/docs/fairness.md.
//
// # Order and parallelism, per broker
//
// The router consumes each subscribed topic with one handler; what comes
// in what order, and how many at once, is the subscriber's: an adapter
// that is a [FlowSubscriber] holds no more than the subscription's
// InFlight, and states in its [Capabilities] whether it consumes in
// parallel and keeps order per key. In every case, a message's event
// handlers run under the mediator's own limits. Use the presets (natsjs,
// amqpbus, redisbus, kafkabus) rather than Watermill's own subscribers for
// those brokers: Watermill's hand a consumer one message at a time, and
// watermill-nats has a close race (a subscription that ends while a
// message arrives can send on its closed channel). The brokers' pages
// (https://github.com/fxcqrs/fxcqrs/blob/main/docs/bus.md#brokers) give
// each one's production settings.
package fxbus
