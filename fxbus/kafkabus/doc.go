// Package kafkabus is Kafka for fxbus, on franz-go: a Watermill publisher
// and subscriber (the bus stays Watermill's) with the settings a service
// needs, in a module of its own so that only its users download the
// Kafka client.
//
//	fx.New(fxcqrs.Module, fxbus.Module,
//		kafkabus.Module(kafkabus.Config{Brokers: []string{"kafka-1:9092", "kafka-2:9092"}, Group: "billing"}),
//		…)
//
// # Publishing
//
// The route's key ([fxbus.KeyBy], the [fxbus.MetadataKey] metadata) is
// the record's key, so Kafka's partitioner (murmur2 of the key, as the
// Java client's) puts a key's records in one partition, in the order they
// were sent; the payload is the record's value, the metadata its headers,
// and the message id the _watermill_message_uuid header (watermill-kafka's,
// so either side reads the other).
//
// The producer is idempotent and waits for acks=all: a record the brokers
// acknowledged is in every in-sync replica, and a retry inside the client
// never writes it twice. [PubSub.PublishBatch] ([fxbus.BatchPublisher])
// sends the outbox relay's batch at once and waits for every record: the
// records go to several partitions (one per key) and fail independently
// (a failed record's later records on its partition fail with it, so a
// partition keeps its order); it reports the acknowledged prefix, which
// the relay deletes, and the relay sends the rest again. Records after
// the first failure that the brokers had taken are then written twice:
// the inbox drops the duplicate. A relay killed between the brokers'
// acknowledgement and its DELETE sends its batch again too. So the
// duplicates are at most one batch per lane per relay crash or failed
// batch, and each is dropped by the consumer's inbox.
//
// Lanes and partitions: the relay splits a topic's rows into lanes by a
// hash of the key (fxoutbox's LaneOf), Kafka splits its records into
// partitions by another (murmur2). They are independent: one lane's batch
// spans partitions, and two relays on different lanes may write to one
// partition at once. A key's order holds all the same: the key is in one
// lane (sent in order by one relay at a time, the unacknowledged rest
// sent again before anything later) and in one partition (kept in order by
// the idempotent producer). Two keys of one partition interleave as their
// lanes send them.
//
// A payload over [PubSub.Capabilities]' MaxPayload (Config.MaxRecordBytes less
// [MetadataAllowance]) fails to publish with the limit in the error,
// before anything is sent. Publishing to a topic that does not exist fails
// naming it: topics are made ahead of time by [PubSub.Provision]
// ([fxbus.Provisioner], which the bus calls at start for every topic it
// declares), with Config.Partitions and Config.ReplicationFactor; the
// brokers' auto.create.topics.enable plays no part.
//
// # Consuming
//
// Each subscription is a member of the Group's consumer group on its topic,
// with cooperative sticky rebalancing: a member that joins or leaves moves
// only the partitions that must move, and the others go on. A partition
// belongs to one member at a time, so its keys are handled by one process
// at a time; the partitions bound the replicas that share the work.
//
// Within the partitions a member holds, up to [fxbus.Flow]'s InFlight
// messages are handed over at once; with InOrder, a key's next message
// only once the one before it was acknowledged, so different keys of one
// partition run side by side and a key's run one after another. A nacked
// message is handed over again, before its key's later ones, by the
// member that holds its partition: a replica that stops (its mediator
// stopping, it nacks what it gets) hands it over to the others with its
// partitions. A subscription holds at most 4×InFlight records (64 at
// least): handed over, waiting behind their key, or acknowledged behind
// one that is not; a slow message holds the others back once they fill
// that.
//
// Offsets: a partition's committed offset is the one after its highest
// contiguous acknowledged message. A message acknowledged while one before
// it is still being handled does not move it, so a crash hands over again
// what was not handled (and perhaps some that were: the inbox drops them),
// never skips it. Each partition's handled prefix is marked as it grows
// and committed every Config.CommitInterval (1s; franz-go's autocommit of
// marked offsets): a crash hands over again at most what was handled in
// the last interval, besides what was in flight.
//
// Rebalancing: when the group takes a partition from a member, the member
// hands over none of its records more, waits for its messages in flight
// (at most half of Config.RebalanceTimeout), commits, and only then lets
// the group give the partition to another member, which goes on after
// them. A handler that outlasts that wait loses its partition anyway: its
// message may be handled again elsewhere (once, through the inbox), and
// its key's next message may start before it ends. Closing a subscription
// does the same for all its partitions, then leaves the group.
//
// A record that another producer wrote without an id header gets one
// from where it lies (topic, partition, offset). Every record becomes a
// message: a payload the bus cannot decode is dead-lettered by the bus,
// acknowledged, and its offset passed like any other.
//
// # Starting
//
// franz-go connects lazily. [New] asks every seed broker for the
// cluster's metadata within Config.StartTimeout and fails, naming each
// seed with its error, when none answers: a service fails at start, not
// at its first message. One seed that answers is enough (it names the
// others).
//
// # In production
//
// The settings a production cluster needs (replication and
// min.insync.replicas, partitions, RebalanceTimeout, credentials), and
// what the tests, on franz-go's in-process kfake, cannot show, are on the
// Kafka page
// (https://github.com/fxcqrs/fxcqrs/blob/main/docs/broker-kafka.md#production-settings).
package kafkabus
