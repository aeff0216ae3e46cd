// Package amqpbus is RabbitMQ for fxbus: a publisher and a subscriber on
// amqp091-go with the settings a service needs. It is a package of its
// own so that only its users compile the AMQP client.
//
//	ps, err := amqpbus.New(amqpbus.Config{URL: "amqp://guest:guest@127.0.0.1:5672/", Group: "billing"})
//	fx.Supply(fx.Annotate(ps, fx.As(new(message.Publisher)), fx.As(new(message.Subscriber))))
//
// # Topics and provisioning
//
// Each topic is a durable fanout exchange; each service (Group) has a
// durable queue on it, named topic_group, which its replicas share; every
// service gets every message. A topic name is 1 to 255 bytes (with
// "_"+Group, for the queue) of letters, digits, '-', '_', '.' and ':',
// not starting with "amq." ([PubSub.CheckTopic]).
//
// Provisioning is explicit: [PubSub.Provision] declares the exchange,
// what publishing needs, and [PubSub.ProvisionConsumer] also declares and
// binds the Group's queue, what consuming needs; the bus calls the first
// for the topics it only publishes to and the second for those it
// subscribes to and their dead letters (fxbus.ConsumerProvisioner), so a
// service that only publishes leaves no queue behind. A publish to a topic
// whose exchange does not exist fails with [ErrNotProvisioned], naming the
// topic, instead of being dropped. A fanout exchange still drops what no
// queue is bound to yet: provision a consuming service's queue before
// anything it must read is published (run its ProvisionConsumer ahead, or
// start it once).
//
// # Queue type
//
// The Group's queues are declared with x-queue-type classic, whatever
// the vhost's default type; an untyped queue an earlier version made is
// classic already and is used as it is. When the Group's queue exists as
// a quorum (or stream) queue, provisioning and subscribing fail with an
// error naming the queue and its type: a quorum queue requeues a nacked
// message at its end and drops it past a delivery limit, which would
// break InOrder (the order page has the measurements:
// https://github.com/fxcqrs/fxcqrs/blob/main/docs/order.md#rabbitmq-quorum-queues).
// To move a quorum queue's messages, stop its consumers, shovel them to
// a new classic queue of the same name (delete the quorum queue once it
// is empty, declare the classic one, move them back), and start the
// service again.
//
// # Publishing
//
// Publish waits for RabbitMQ's publisher confirm of each message, on a
// pool of confirm-mode channels of a connection of its own (a relay that
// deletes a row once the publish returned never deletes one RabbitMQ did
// not take), and marks messages persistent. PublishBatch (what the
// outbox's relay uses, as an fxbus.BatchPublisher) sends a whole batch
// before it waits for the confirms. A message larger than the server's
// max_message_size ([Config.MaxPayload]: 128 MiB by default before
// RabbitMQ 4.0, 16 MiB from 4.0) fails to publish, naming the limit.
// Messages are written as watermill-amqp wrote them (payload as the
// body, metadata as headers, the id in the _watermill_message_uuid
// header), so queues filled by earlier versions are read as they were.
//
// # Consuming
//
// A subscription ([PubSub.SubscribeFlow]) is a channel with the
// subscription's InFlight as its prefetch: RabbitMQ hands over that many
// messages before the first is acknowledged, and each is acknowledged or
// nacked (requeued) by itself. With InOrder, the subscriber hands a key's
// messages over one at a time in the queue's order, and a nacked message
// is requeued together with the key's messages received after it, in
// order, before any other acknowledgement goes out. Until all of them
// have come back, a later message of the key that arrives is requeued
// too, and those that came back are held; then they go out in queue
// order (the order they first arrived in), whatever order they came back
// in. So a nacked message is never overtaken by its
// key's later ones.
//
// When a subscription ends (its context), RabbitMQ stops delivering to
// it; the channel closes once what was handed over is settled (or the
// PubSub closes), and what was not handed over goes back to the queue in
// place. A killed process's channel closes with its connection: RabbitMQ
// requeues what it held, in place, and the next consumer gets it first.
// A key's order therefore survives nacks, clean restarts and kills while
// a single process consumes the queue; replicas consuming it together
// divide the key's messages, unless the topic has lanes (below). A lost
// channel is opened again, backing off up to 5 s; messages handed over
// on the lost one come again.
//
// # Lanes: order per key across replicas
//
// A queue shared by replicas splits a key's messages between them. With
// [Config.Lanes] (or TopicLanes) above 1, a keyed message is published to
// the exchange of its lane instead, "<topic>._lane.<n>" (fxbus.LaneOf;
// lane 0 is the topic's own exchange), each with the Group's queue
// "<topic>._lane.<n>_<group>" bound to it, and the Group's replicas
// divide the lanes: each lane's queue is consumed by the one replica that
// holds its lease ([Config.Lease], 3s, renewed every Lease/6). RabbitMQ
// keeps no leases, so they are written to [Config.Leases], a
// fxbus.LeaseStore (fxoutbox.LaneLeaseStore keeps them in the outbox's
// tables; under fx, [Module] takes the one fxoutbox.Module provides). The
// lanes' queues are declared with x-single-active-consumer as well: if a
// stalled replica still consumes a lane whose lease passed to another,
// RabbitMQ keeps delivering to it alone until its channel closes. A
// replica handing a lane over closes its channel first, which puts what
// it held back at the head of the queue for the next owner; a killed
// one's connection closes at once, and its lanes move when their leases
// run out; a host that vanishes keeps its queues' consumers until
// RabbitMQ misses two of its heartbeats ([Config.Heartbeat]). Each lane's
// prefetch is the subscription's InFlight divided by the lanes. The
// figure of lanes is kept as the x-max-length argument of a queue named
// "<topic>._lanes" (neither bound nor consumed), which RabbitMQ refuses
// to declare again with another value: a process with another figure
// fails to provision or subscribe. The page on replicas has the details
// and the measurements
// (https://github.com/fxcqrs/fxcqrs/blob/main/docs/replicas.md#rabbitmq).
//
// A handler may hold its message as long as it runs, up to the server's
// consumer_timeout; what that means for long handlers, and the other
// production settings (quorum queues), is on the RabbitMQ page
// (https://github.com/fxcqrs/fxcqrs/blob/main/docs/broker-rabbitmq.md#production-settings).
//
// New connects, and fails naming the address (without its password)
// when RabbitMQ cannot be reached.
package amqpbus
