package fxbus_test

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
)

// Timed is the benchmarks' event: when it was emitted.
type Timed struct {
	Seq    int   `json:"seq"`
	SentAt int64 `json:"sentAt"`
}

// SendTimed makes the producer emit one Timed.
type SendTimed struct{ Seq int }

// latencies collects how long each event took from emit to the remote
// handler.
type latencies struct {
	mu   sync.Mutex
	d    []time.Duration
	want int
	all  chan struct{}
	one  chan struct{} // a token per event, for the closed loop
}

func newLatencies(want int) *latencies {
	return &latencies{want: want, all: make(chan struct{}), one: make(chan struct{}, want), d: make([]time.Duration, 0, want)}
}

func (l *latencies) add(sentAt int64) {
	d := time.Since(time.Unix(0, sentAt))
	l.mu.Lock()
	l.d = append(l.d, d)
	if len(l.d) == l.want {
		close(l.all)
	}
	l.mu.Unlock()
	l.one <- struct{}{}
}

func (l *latencies) report(b *testing.B, elapsed time.Duration) {
	slices.Sort(l.d)
	b.ReportMetric(float64(len(l.d))/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(l.d[len(l.d)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(l.d[len(l.d)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(0, "ns/op") // per-event time is events/s; ns/op would count the whole run
}

// BenchmarkEndToEnd measures events from Emit to the remote handler, one
// event per call, over each broker: fxcqrs with fxbus (a command handler
// emits, a route publishes, a subscription hands the message to Publish,
// an event handler receives it) against Watermill alone publishing and
// consuming the same JSON messages with a bare router handler, in the same
// run. "open" publishes as fast as it can (throughput; latency then
// includes the backlog); "closed" waits for each event before the next
// (latency of one event in an idle system).
func BenchmarkEndToEnd(b *testing.B) {
	brokers := map[string]func(testing.TB) broker{
		"gochannel":      goChannelBroker,
		"nats-jetstream": natsBroker,
		"rabbitmq":       rabbitBroker,
	}
	for _, name := range []string{"gochannel", "nats-jetstream", "rabbitmq"} {
		for _, loop := range []string{"open", "closed"} {
			closed := loop == "closed"
			b.Run(name+"/"+loop+"/watermill", func(b *testing.B) { benchWatermill(b, brokers[name], closed) })
			b.Run(name+"/"+loop+"/fxcqrs", func(b *testing.B) { benchFxcqrs(b, brokers[name], closed) })
		}
	}
}

func benchWatermill(b *testing.B, open func(testing.TB) broker, closed bool) {
	n, br, t := b.N, open(b), b
	{
		tp := topic(t, "bench")
		t.Cleanup(func() { br.forget(t, tp) })
		br.prepare(t, tp, "c")
		pub, _ := br.open(t, "p")
		_, sub := br.open(t, "c")
		lat := newLatencies(n)
		router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
		if err != nil {
			t.Fatal(err)
		}
		router.AddConsumerHandler("bench", tp, sub, func(msg *message.Message) error {
			var e Timed
			if err := json.Unmarshal(msg.Payload, &e); err != nil {
				return err
			}
			lat.add(e.SentAt)
			return nil
		})
		go func() { _ = router.Run(context.Background()) }()
		<-router.Running()
		defer router.Close()
		b.ResetTimer()
		start := time.Now()
		for i := range n {
			payload, _ := json.Marshal(Timed{Seq: i, SentAt: time.Now().UnixNano()})
			msg := message.NewMessage(watermill.NewUUID(), payload)
			msg.Metadata.Set(fxbus.MetadataName, "Timed")
			if err := pub.Publish(tp, msg); err != nil {
				t.Fatal(err)
			}
			if closed {
				<-lat.one
			}
		}
		<-lat.all
		elapsed := time.Since(start)
		b.StopTimer()
		lat.report(b, elapsed)
	}
}

func benchFxcqrs(b *testing.B, open func(testing.TB) broker, closed bool) {
	n, br, t := b.N, open(b), b
	{
		tp := topic(t, "bench")
		t.Cleanup(func() { br.forget(t, tp, tp+"_poison") })
		br.prepare(t, tp, "c")
		lat := newLatencies(n)
		_, sub := br.open(t, "c")
		pub2, _ := br.open(t, "c")
		service(t, pub2, sub,
			fxbus.Subscribe[Timed](tp),
			fxcqrs.AsEventHandler(func() eventFunc[Timed] {
				return func(_ context.Context, e Timed) error { lat.add(e.SentAt); return nil }
			}),
		)
		pub, _ := br.open(t, "p")
		m := service(t, pub, nil,
			fxbus.Route[Timed](tp),
			fxcqrs.AsCommandHandler(func() commandFunc[SendTimed] {
				return func(ctx context.Context, c SendTimed) error {
					fxcqrs.Emit(ctx, Timed{Seq: c.Seq, SentAt: time.Now().UnixNano()})
					return nil
				}
			}),
		)
		b.ResetTimer()
		start := time.Now()
		for i := range n {
			if err := fxcqrs.Exec(context.Background(), m, SendTimed{Seq: i}); err != nil {
				t.Fatal(err)
			}
			if closed {
				<-lat.one
			}
		}
		<-lat.all
		elapsed := time.Since(start)
		b.StopTimer()
		lat.report(b, elapsed)
	}
}
