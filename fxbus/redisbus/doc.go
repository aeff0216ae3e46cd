// Package redisbus is Redis Streams for fxbus: a subscriber of its own on
// go-redis and watermill-redisstream's publisher, with the settings a
// service needs. It is a package of its own so that only its users
// compile the Redis client.
//
//	ps, err := redisbus.New(redisbus.Config{Addr: "127.0.0.1:6379", Group: "billing", Consumer: "billing-0"})
//	fx.Supply(fx.Annotate(ps, fx.As(new(message.Publisher)), fx.As(new(message.Subscriber))))
//
// # Topics and provisioning
//
// Each topic is a stream; each service (Group) a consumer group on it,
// created to read from the stream's first entry, so that what was
// published after the group was made and before the service first
// subscribed is not skipped. Every service gets every message; a
// service's replicas share its group. A topic is 1 to 1024 bytes without
// spaces or control characters ([PubSub.CheckTopic]).
//
// Provisioning is explicit: [PubSub.Provision] (which the bus calls for
// its topics at start) makes the stream and the Group's consumer group
// (XGROUP CREATE … MKSTREAM); a subscription makes them too. A publish to
// a topic whose stream does not exist fails with [ErrNotProvisioned],
// naming the topic, instead of making a stream nobody reads. A group made
// after entries were published reads them (it starts at the first
// entry); entries published before the stream existed do not exist.
//
// Streams are not trimmed: trimming can drop entries a group has not
// read. Trim them yourself (XTRIM) once every group has read them. An
// entry trimmed while pending is acknowledged and skipped.
//
// Publish returns once Redis has taken the entry; what Redis keeps across
// its own restart is its persistence settings' (AOF), not this
// package's. Entries are written as watermill-redisstream wrote them (the
// _watermill_message_uuid, metadata (msgpack) and payload fields), and
// streams filled by earlier versions are read as they were. A payload
// above [Config.MaxPayload] (default 512 MiB, Redis's limit on one value)
// fails to publish, naming the limit.
//
// # Consuming
//
// A subscription ([PubSub.SubscribeFlow]) holds at most the
// subscription's InFlight entries read and not acknowledged: XREADGROUP
// reads no more than there is room for, entries are handed over
// before the first is acknowledged, and each is acknowledged (XACK) by
// itself. Entries are handed over in stream order, and with InOrder a
// key's entries one at a time. A nacked entry stays pending and is handed
// over again before every later entry, so that a key's order holds
// through a nack.
//
// A replica consumes the group as [Config.Consumer], which
// stays the same across the replica's restarts and differs between
// replicas: a process holds its name on a topic under a lease in Redis
// (renewed every second, 3 s to live), a subscription under a name a live
// process holds fails naming it, and the default name is Group-hostname,
// or Group-hostname-1, -2, … for the replicas after the first on one
// host. A killed replica's successor waits for its lease to run out (at
// most 5 s) and takes its name back. When a subscription starts it reads
// first the entries its
// Consumer holds pending — what the process held when it stopped or was
// killed — in stream order, then the entries pending under consumer
// names without a live holder (a replica that stopped, one whose lease
// ran out, the random names of earlier versions), then those of other
// consumers idle for [Config.MaxIdleTime]
// (default 30 s: a consumer taken for dead), then new entries. An idle
// subscription looks for such entries again every 2 s. A key's order
// therefore survives clean restarts and kills while a single process
// consumes the topic; entries claimed from a dead consumer come after their idle time,
// out of order with what was handled meanwhile. A subscription claims
// the entries it holds again every third of MaxIdleTime (XCLAIM JUSTID,
// which resets their idle time), so that a handler running longer than
// MaxIdleTime keeps its entry instead of another replica claiming it.
//
// # Lanes: order per key across replicas
//
// With Config.Lanes (or TopicLanes) above 1, a keyed message goes to its
// lane's stream, "<topic>._lane.<n>" (fxbus.LaneOf; lane 0 is the topic's
// stream), and a subscription with fxbus.InOrder shares the topic's lanes
// with its Group's replicas: each lane is owned by one replica at a time,
// under a lease in the hash "fxcqrs:own:<topic>:<group>" (Config.Lease,
// 3s, renewed every Lease/6), and read under one consumer name, "lane",
// whoever owns it: a new owner reads the lane's pending entries first
// (what the previous owner held), in stream order, then new ones. A
// replica that gives a lane up (another joined, or it stops) lets its
// handlers finish before it gives the lease back; one that dies loses its
// lanes when their leases run out. Past Lease less a quarter without a
// renewal, a replica sends no more XACKs of the lane and the inbox
// refuses its handlers' effects (fxbus.Fenced). Each lane holds up to
// InFlight/Lanes entries. Provisioning a topic stores its lane count in
// "fxcqrs:lanes:<topic>"; a process configured with a different count
// fails at start. See docs/replicas.md.
//
// A subscription that ends (its context) stops reading; what it handed
// over may still be acknowledged until the PubSub closes; what it holds
// unacknowledged stays pending under the Consumer's name, for its next
// start.
//
// New pings Redis, and fails naming the address when it cannot be
// reached.
package redisbus
