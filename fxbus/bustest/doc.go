// Package bustest is the conformance suite every fxbus broker adapter
// runs: natsjs, amqpbus, redisbus, the in-process broker, and every
// adapter added later. An adapter's package calls it from a test:
//
//	func TestConformance(t *testing.T) {
//		bustest.Run(t, bustest.Adapter{
//			Open: func(t testing.TB, group string) (message.Publisher, message.Subscriber) {
//				ps, err := mybus.New(mybus.Config{Addr: addr, Group: group})
//				require.NoError(t, err)
//				t.Cleanup(func() { _ = ps.Close() })
//				return ps, ps
//			},
//			Forget: func(t testing.TB, topics ...string) { … },
//		})
//	}
//
//	func BenchmarkConformance(b *testing.B) { bustest.Bench(b, adapter(b)) }
//
// # What it checks
//
// Each case is a subtest named after it, so that a failure says which.
// A case reads what the adapter states of itself (fxbus.Broker's
// Capabilities, on the publisher or subscriber Open returns) and checks
// the statement; a capability the adapter does not state is not skipped:
// its weaker promise is checked, or the case logs what it saw.
//
//   - Capabilities: the adapter is an fxbus.Broker with a Name; its
//     CheckTopic takes the suite's topics; Parallel comes with
//     fxbus.FlowSubscriber.
//   - PublishSubscribe: one group gets every message with its id,
//     payload and metadata; two groups each get all; two replicas of a
//     group share (each message to one of them); ThroughTheBus: two event
//     types on one topic from one application's routes to another's
//     subscriptions, the correlation id crossing.
//   - BatchAcks: an fxbus.BatchPublisher reports the acknowledged prefix:
//     all of a good batch, those before a message above MaxPayload, none
//     on a topic nobody provisioned.
//   - Redelivery: a nacked message comes back; a replica whose mediator
//     is stopping nacks, and the other replica handles everything.
//   - InFlight: through an fxbus.Bus, InFlight(n) runs at most n handlers
//     at once, and n at once when the adapter states Parallel (proven by
//     a barrier that opens once n handlers are in it, not by timing); an
//     fxbus.FlowSubscriber hands over at most Flow.InFlight unsettled
//     messages.
//   - InOrder: with handlers failing and nacking at random, each key's
//     effects happen in order, when the adapter states OrderPerKey.
//   - OrderAcrossRestart (issue 42): a consumer stops in the middle of a
//     keyed stream, cleanly (Close) or as a killed process (Abandon, with
//     Adapter.Abandon); a new one takes the rest. Effects are recorded
//     once per message id, as the inbox does: a message handled twice is
//     no violation; a later message's effect before an earlier one's is,
//     when the adapter states OrderPerKey. Nothing is lost.
//   - CloseWhileDelivering: a subscriber closed while it holds messages
//     returns, closes its channel, and what it held comes back to the
//     group's next subscriber; a bus stopped in the middle of a message
//     finishes it, and its replica handles the rest.
//   - DeadLetter and ReplayMark: a message that fails for good goes to
//     the topic followed by "_poison", with its id, payload, metadata and
//     reason; a message published again with fxbus.MetadataReplay (a
//     repair's replay) is delivered again, with its id and the mark.
//   - Expiry: a message a route with fxbus.DeliverWithin made, received
//     after its deliver-by time, goes to the dead letter topic with the
//     reason "expired" and its deliver-by, never handled; one received in
//     time is handled.
//   - LargePayload: a payload of MaxPayload bytes goes through whole, one
//     byte more fails with an error naming the limit; without a stated
//     limit, 4 MiB goes through.
//   - UnknownTopic: a publish to a topic nobody provisioned fails naming
//     it, when the adapter is an fxbus.Provisioner; otherwise the case
//     logs what happened.
//   - TopicRule: Adapter.BadTopic fails CheckTopic, and fxbus.New with a
//     route, a subscription or a dead letter topic on it, each naming the
//     topic and the rule (without a BadTopic, the empty topic fails
//     CheckTopic naming the rule); an adapter with no rule takes any.
//   - Unreachable: the adapter's constructor against an address where
//     nothing listens fails naming the address (Adapter.Unreachable).
//
// Every topic is the case's own (bustest_<case>_<random>), and so are its
// consumer groups (named after the topic, see Groups): each case is a
// service of its own. Adapter.Forget deletes the topics when the case
// ends. Cases run in parallel and wait on conditions with generous
// deadlines, never on time.
//
// # Pending cases
//
// An adapter that does not pass a case yet lists it in Adapter.Pending
// with the reason and its issue; Run skips it with "pending: " and the
// reason. FXCQRS_BUSTEST_PENDING=run runs the pending cases anyway, to
// see whether a fix made them pass.
//
// # Benchmarks
//
// Bench measures a subscription's consumption of a backlog through an
// fxbus.Bus, with a handler that waits 1ms on simulated I/O, at
// InFlight(1), InFlight(16), and InFlight(16) with InOrder over 64 keys.
// Read them as ratios within one run: InFlight1 ÷ InFlight16 (ns/op) is
// the speed-up of consuming in parallel, about 1× on an adapter that
// hands over one message at a time; InFlight16 ÷ InFlight16InOrder is
// what keeping the keys' order costs.
package bustest
