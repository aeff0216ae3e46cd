package fxoutbox_test

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// Listed is version 2 of the event "Placed": version 1, which the rows
// below were written as, had a "label" where it has a "title".
type Listed struct {
	ID    int    `json:"id"`
	Title string `json:"title"`
}

// Stocked is version 2 of the durable event "Stocked", as Listed is.
type Stocked Listed

// upcasters are Listed's and Stocked's, 1 → 2.
var upcasters = []fxbus.Upcaster{
	{Name: "Placed", From: 1, Up: labelToTitle},
	{Name: "Stocked", From: 1, Up: labelToTitle},
}

func labelToTitle(p []byte) ([]byte, error) {
	return bytes.Replace(p, []byte(`"label"`), []byte(`"title"`), 1), nil
}

// storeV1 writes what a service without versions left behind: a backlog
// of two outbox rows, a schedule due in a week, and a parked key of two
// inbound messages, all of "Placed" version 1, and a durable delivery of
// "Stocked" version 1, their metadata without a version as it was then.
func storeV1(t *testing.T, d database, now time.Time) {
	t.Helper()
	meta := func(id string) string {
		return `{"name":"Placed","content_type":"application/json","correlation_id":"` + id + `"}`
	}
	stocked := watermill.NewUUID()
	exec := func(q string, args ...any) {
		_, err := d.DB.Exec(d.Dialect.Rebind(q), args...)
		require.NoError(t, err)
	}
	for i := 1; i <= 2; i++ {
		id := watermill.NewUUID()
		exec("INSERT INTO fxcqrs_outbox (topic, message_id, payload, metadata, created_ns) VALUES (?, ?, ?, ?, ?)",
			"orders", id, []byte(`{"id":`+strconv.Itoa(i)+`,"label":"backlog"}`), meta(id), now.UnixNano())
	}
	exec("INSERT INTO fxcqrs_outbox (topic, message_id, payload, metadata, created_ns) VALUES (?, ?, ?, ?, ?)",
		"fxcqrs.local", stocked, []byte(`{"id":6,"label":"durable"}`), `{"name":"Stocked","fxcqrs_depth":"1"}`, now.UnixNano())
	id := watermill.NewUUID()
	exec("INSERT INTO fxcqrs_outbox_scheduled (due_ns, topic, message_id, payload, metadata) VALUES (?, ?, ?, ?, ?)",
		now.Add(7*24*time.Hour).UnixNano(), "orders", id, []byte(`{"id":3,"label":"next week"}`), meta(id))
	for i := 4; i <= 5; i++ {
		id := watermill.NewUUID()
		exec("INSERT INTO fxcqrs_outbox_inbound_dead (topic, message_id, payload, metadata, error, failed_ns, msg_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
			"inbound", id, []byte(`{"id":`+strconv.Itoa(i)+`,"label":"parked"}`), meta(id), "handler failed", now.UnixNano(), "k")
	}
}

// versionRig is v2 code over storeV1's rows: Listed routed to "orders"
// and subscribed on "inbound" as version 2, with or without the upcaster.
type versionRig struct {
	outbox *fxoutbox.Outbox
	bus    *fxbus.Bus
	gc     *gochannel.GoChannel
	got    chan Listed  // what the subscription handled
	stock  chan Stocked // what durable delivery handled
	logs   *observer.ObservedLogs
}

func newVersionRig(t *testing.T, d database, clock *fakeClock, ups ...fxbus.Upcaster) *versionRig {
	t.Helper()
	gc := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 64, Persistent: true}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	core, logs := observer.New(zapcore.ErrorLevel)
	bus, err := fxbus.New(fxbus.Config{Publisher: gc, Subscriber: gc, Upcasters: ups},
		[]fxbus.Routing{
			fxbus.NewRoute[Listed]("orders", fxbus.Name("Placed"), fxbus.Version(2)),
			fxbus.NewRoute[Stocked]("stock", fxbus.Version(2)),
		},
		[]fxbus.Subscription{fxbus.NewSubscription[Listed]("inbound", fxbus.Name("Placed"), fxbus.Version(2))})
	require.NoError(t, err)
	o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{
		Dialect: d.Dialect, Now: clock.Now, After: clock.After,
		Relay:        fxoutbox.RelayConfig{PollInterval: 50 * time.Millisecond},
		Deliverables: []fxoutbox.Deliverable{fxoutbox.DurableEvent[Stocked]()},
	}, zap.New(core))
	require.NoError(t, err)
	got, stock := make(chan Listed, 16), make(chan Stocked, 16)
	m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithMiddleware(o.UnitOfWork()), fxcqrs.WithEventHandlers(
		eventFunc[Listed](func(_ context.Context, e Listed) error { got <- e; return nil }),
		eventFunc[Stocked](func(_ context.Context, e Stocked) error { stock <- e; return nil })))
	require.NoError(t, err)
	o.DeliverTo(m)
	require.NoError(t, o.Start(context.Background()))
	require.NoError(t, bus.Start(context.Background(), m))
	t.Cleanup(func() {
		if t.Failed() {
			for _, e := range logs.All() {
				t.Log(e.Message, e.ContextMap())
			}
		}
		require.NoError(t, bus.Stop(context.Background()))
		require.NoError(t, m.Stop(context.Background()))
		require.NoError(t, o.Stop(context.Background()))
	})
	return &versionRig{outbox: o, bus: bus, gc: gc, got: got, stock: stock, logs: logs}
}

// polled waits for cond while it moves clock on by the relay's poll
// interval: a repair wakes no relay, nor does a dead-lettered row; the
// relay's next poll finds what is left.
func polled(t *testing.T, clock *fakeClock, cond func() bool, msg string) {
	t.Helper()
	require.Eventually(t, func() bool { clock.Advance(50 * time.Millisecond); return cond() }, time.Minute, 5*time.Millisecond, msg)
}

// The check, on each database: a v1 backlog, a v1 schedule due
// next week and a parked key of v1 messages, left by code without
// versions. After a deploy of v2 code with the upcaster, the backlog and
// the schedule are published as v2 and the released key is handled as v2;
// without it, the start check names each table's v1 messages, and each
// one is dead-lettered with the reason as it is read: nothing decoded
// wrong, nothing lost.
func TestStoredMessagesAreUpcast(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		t.Run("with the upcaster", func(t *testing.T) {
			d := openDatabase(t, d.Dialect)
			clock := newFakeClock()
			storeV1(t, d, clock.Now())
			r := newVersionRig(t, d, clock, upcasters...)
			assert.Zero(t, r.logs.Len(), "the start check finds nothing unreachable: %v", r.logs.All())
			orders := received(t, r.gc, "orders")
			var got []string
			for range 2 {
				msg := next(t, orders)
				assert.Equal(t, "2", msg.Metadata.Get(fxbus.MetadataVersion))
				got = append(got, string(msg.Payload))
			}
			assert.ElementsMatch(t, []string{`{"id":1,"title":"backlog"}`, `{"id":2,"title":"backlog"}`}, got)
			select {
			case e := <-r.stock:
				assert.Equal(t, Stocked{6, "durable"}, e, "durable delivery upcasts too")
			case <-time.After(time.Minute):
				t.Fatal("the durable row was not delivered")
			}

			clock.Advance(7*24*time.Hour - time.Hour)
			from := fxoutbox.Passes(r.outbox)
			polled(t, clock, func() bool { return fxoutbox.Passes(r.outbox) >= from+3 }, "the relay looks")
			select {
			case msg := <-orders:
				t.Fatalf("published before its time: %s", msg.Payload)
			default:
			}
			clock.Advance(time.Hour)
			msg := next(t, orders)
			assert.Equal(t, `{"id":3,"title":"next week"}`, string(msg.Payload))
			assert.Equal(t, "2", msg.Metadata.Get(fxbus.MetadataVersion))

			n, err := r.outbox.Admin().Release(context.Background(), "inbound", "k", "test", "v2 deployed")
			require.NoError(t, err)
			assert.Equal(t, 2, n)
			var handled []Listed
			polled(t, clock, func() bool {
				select {
				case e := <-r.got:
					handled = append(handled, e)
				default:
				}
				return len(handled) == 2
			}, "the released key's messages are handled")
			assert.ElementsMatch(t, []Listed{{4, "parked"}, {5, "parked"}}, handled)
			dead, err := r.outbox.Admin().ListDead(context.Background(), fxoutbox.DeadLetterFilter{})
			require.NoError(t, err)
			for _, l := range dead {
				assert.True(t, l.Inbound, "only the released letters, kept as released: %+v", l)
			}
		})
		t.Run("without it", func(t *testing.T) {
			d := openDatabase(t, d.Dialect)
			clock := newFakeClock()
			storeV1(t, d, clock.Now())
			r := newVersionRig(t, d, clock)
			const reason = `fxbus: "Placed" (fxoutbox_test.Listed) version 1 has no upcaster path to version 2: the upcasters reach it from version 2 only; register an fxbus.Upcaster from version 1`
			var named []string
			for _, e := range r.logs.FilterMessageSnippet("no upcaster chain reaches").All() {
				f := e.ContextMap()
				assert.EqualValues(t, 1, f["version"])
				assert.Contains(t, f["error"], "version 1 has no upcaster path to version 2")
				named = append(named, f["table"].(string)+":"+f["name"].(string)+":"+strconv.FormatInt(f["rows"].(int64), 10))
			}
			assert.ElementsMatch(t, []string{"outbox:Placed:2", "outbox:Stocked:1", "scheduled:Placed:1", "inbound_dead:Placed:2"}, named,
				"the start check names each table's")

			admin := r.outbox.Admin()
			deadRows := func() []fxoutbox.DeadLetter {
				dead, err := admin.ListDead(context.Background(), fxoutbox.DeadLetterFilter{})
				require.NoError(t, err)
				var out []fxoutbox.DeadLetter
				for _, l := range dead {
					if !l.Inbound {
						out = append(out, l)
					}
				}
				return out
			}
			polled(t, clock, func() bool { return len(deadRows()) == 3 }, "the backlog and the durable row are dead-lettered")
			clock.Advance(7 * 24 * time.Hour)
			polled(t, clock, func() bool { return len(deadRows()) == 4 }, "and the schedule when due")
			_, err := admin.Release(context.Background(), "inbound", "k", "test", "no upcaster yet")
			require.NoError(t, err)
			polled(t, clock, func() bool { return len(deadRows()) == 6 }, "and the released key")
			for _, l := range deadRows() {
				if l.Name == "Stocked" {
					assert.Equal(t, "malformed: "+strings.ReplaceAll(strings.ReplaceAll(reason, `"Placed"`, `"Stocked"`), "Listed", "Stocked"), l.Error)
				} else {
					assert.Equal(t, reason, l.Error)
				}
				assert.Contains(t, string(l.Payload), `"label"`, "kept as it was stored")
			}
			select {
			case e := <-r.got:
				t.Fatalf("decoded wrong: %+v", e)
			case e := <-r.stock:
				t.Fatalf("decoded wrong: %+v", e)
			default:
			}
			left, err := fxoutbox.UnreachableVersions(context.Background(), admin, r.bus)
			require.NoError(t, err)
			var tables []string
			for _, v := range left {
				tables = append(tables, v.Table+":"+v.Name)
			}
			assert.ElementsMatch(t, []string{"dead:Placed", "dead:Stocked"}, tables, "what is left is in the dead letters, to replay once the upcaster is there")
		})
	})
}
