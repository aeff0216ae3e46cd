package fxoutbox_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	nc "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// BenchmarkUnitOfWorkUnderLoad: commands/s from 1 to 64 callers, each
// command a transaction that inserts its order and an outbox-shaped row,
// on PostgreSQL: through the unit of work with the relay running and
// delivering to NATS JetStream, against a plain transaction with the same
// two INSERTs, its rows delivered by a relay that each commit wakes as the
// unit of work's commits wake theirs (FXCQRS_BENCH_PLAIN_POLLS=1 leaves it
// polling: it then falls behind and the plain side pays less).
//
// A second baseline, "plain2", is the same transaction with nothing
// delivering its rows: the order and a raw INSERT of an outbox-shaped row
// into a table of its own that no relay reads (see plain2Side). Against
// it the unit of work pays for its relay too, which the first baseline
// pays as well.
//
// The three sides run in turns of a few hundred commands each, the side
// that goes first changing every turn, so that what the machine does in a
// given second (a slow fsync, a neighbour) falls on both. The figures:
// "ratio", the unit of work's commands/s ÷ the plain transaction's over
// the whole run, "ratio2" the same against plain2; "plain-µs/op",
// "plain2-µs/op" and "outbox-µs/op", each side's time per command (ns/op
// is the three together); "<side>-go-cpu-µs/op", "-pg-cpu-µs/op" and
// "-nats-cpu-µs/op", the CPU per command used during the side's turns by
// this process, by the PostgreSQL backends of its connections and by
// nats-server (Linux; see cpuMeter: where the time goes, including a
// relay's work that spills into another side's turn); "passes/op", the
// outbox relay's passes per command; BenchmarkUnitOfWorkWAL counts their WAL
// flushes and transactions; "backlog", the most of the unit
// of work's rows still in the outbox as one of its turns ends: the relay
// keeping up or not (rows it published count until its window's delete,
// RelayConfig.ProgressInterval: a window's worth is no lag). Run it with a fixed count, as in -benchtime 8000x,
// and several -count for benchstat.
// FXCQRS_BENCH_AA=1 runs the plain side against itself, so that "ratio"
// shows how far from 1 the harness alone strays on the machine.
func BenchmarkUnitOfWorkUnderLoad(b *testing.B) {
	addr := env("FXCQRS_NATS_URL", "nats://127.0.0.1:4222")
	reachable(b, "FXCQRS_NATS_URL", strings.TrimPrefix(addr, "nats://"))
	d := openDatabase(b, fxoutbox.PostgreSQL)
	crashTables(b, d.DB)
	var ids atomic.Int64
	for _, callers := range []int{1, 4, 16, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			// Both sides share one pool that keeps its connections between
			// turns, as a service's pool does under steady load.
			d.DB.SetMaxIdleConns(callers + 8)
			plain := plainSide(b, d, addr, &ids)
			outbox, backlog, passes := outboxSide(b, d, addr, &ids)
			if os.Getenv("FXCQRS_BENCH_AA") != "" {
				outbox = plainSide(b, d, addr, &ids) // both sides plain: the harness's own spread
			}
			sides := [3]func() error{plain, outbox, plain2Side(b, d, &ids)}
			var (
				spent [3]time.Duration
				cpu   [3]cpuSample
				worst int
				meter = newCPUMeter(d.DB)
			)
			turn := max(200, 16*callers)
			// A turn of each first, unmeasured: the pool opens its
			// connections, each relay takes its lease and JetStream makes
			// each topic's stream.
			for _, side := range sides {
				_, err := callConcurrently(turn, callers, side)
				require.NoError(b, err)
			}
			require.Eventually(b, func() bool { return backlog() == 0 }, time.Minute, time.Millisecond)
			passed := passes()
			b.ResetTimer()
			for done, i := 0, 0; done < b.N; done, i = done+turn, i+1 {
				n := min(turn, b.N-done)
				for k := range len(sides) {
					s := (i + k) % len(sides)
					before := meter.sample()
					took, err := callConcurrently(n, callers, sides[s])
					if err != nil {
						b.Fatal(err)
					}
					cpu[s] = cpu[s].add(meter.sample().since(before))
					spent[s] += took
					if s == 1 {
						worst = max(worst, backlog())
					}
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(spent[0])/float64(spent[1]), "ratio")
			b.ReportMetric(float64(spent[2])/float64(spent[1]), "ratio2")
			b.ReportMetric(float64(spent[0].Microseconds())/float64(b.N), "plain-µs/op")
			b.ReportMetric(float64(spent[2].Microseconds())/float64(b.N), "plain2-µs/op")
			b.ReportMetric(float64(spent[1].Microseconds())/float64(b.N), "outbox-µs/op")
			b.ReportMetric(float64(worst), "backlog")
			b.ReportMetric(float64(passes()-passed)/float64(b.N), "passes/op")
			for s, name := range []string{"plain", "outbox", "plain2"} {
				perOp := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 / float64(b.N) }
				b.ReportMetric(perOp(cpu[s].goCPU), name+"-go-cpu-µs/op")
				b.ReportMetric(perOp(cpu[s].pg), name+"-pg-cpu-µs/op")
				b.ReportMetric(perOp(cpu[s].nats), name+"-nats-cpu-µs/op")
			}
		})
	}
}

// callConcurrently runs call n times from callers goroutines and returns
// how long that took, or the first error.
func callConcurrently(n, callers int, call func() error) (time.Duration, error) {
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		first atomic.Pointer[error]
	)
	start := time.Now()
	for range callers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := call(); err != nil {
					first.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := first.Load(); err != nil {
		return 0, *err
	}
	return time.Since(start), nil
}

// plainSide is the baseline: a plain transaction inserting an order and an
// outbox-shaped row, whose rows a relay of their own delivers, woken by
// each commit as the unit of work wakes its relay. The row is shaped as
// the unit of work's are: a message id as long, and metadata as the bus
// writes it (name, content type, correlation id), so that the relay and
// the broker move the same bytes on both sides.
func plainSide(b *testing.B, d database, addr string, ids *atomic.Int64) func() error {
	b.Helper()
	insertOrder := d.Dialect.Rebind("INSERT INTO orders (id) VALUES (?)")
	insertRow := d.Dialect.Rebind("INSERT INTO fxcqrs_outbox (topic, message_id, payload, metadata) VALUES (?, ?, ?, ?)")
	topic := fmt.Sprintf("plain_%d", rand.Uint64())
	dropStreamAtCleanup(b, addr, topic)
	provisionStream(b, addr, topic)
	wake := relayTo(b, d, addr)
	b.Cleanup(func() {
		_, err := d.DB.Exec(d.Dialect.Rebind("DELETE FROM fxcqrs_outbox WHERE topic = ?"), topic)
		require.NoError(b, err)
	})
	meta := plainMetadata(b)
	polls := os.Getenv("FXCQRS_BENCH_PLAIN_POLLS") != ""
	ctx := context.Background()
	return func() error {
		if err := plainTx(ctx, d.DB, insertOrder, insertRow, topic, ids.Add(1), meta); err != nil {
			return err
		}
		if !polls {
			wake(topic)
		}
		return nil
	}
}

// plain2Side is the baseline without a relay: a plain transaction
// inserting an order and an outbox-shaped row (the unit of work's shape,
// as plainSide writes it) into plain2_outbox, a table of the outbox's
// shape that nothing reads or deletes from.
func plain2Side(b *testing.B, d database, ids *atomic.Int64) func() error {
	b.Helper()
	plain2Table(b, d.DB)
	insertOrder := d.Dialect.Rebind("INSERT INTO orders (id) VALUES (?)")
	insertRow := d.Dialect.Rebind("INSERT INTO plain2_outbox (topic, message_id, payload, metadata) VALUES (?, ?, ?, ?)")
	topic := fmt.Sprintf("plain2_%d", rand.Uint64())
	meta := plainMetadata(b)
	ctx := context.Background()
	return func() error {
		return plainTx(ctx, d.DB, insertOrder, insertRow, topic, ids.Add(1), meta)
	}
}

// plainTx is the baselines' transaction: order id inserted by insertOrder
// and an outbox-shaped row by insertRow, committed, or rolled back on an
// error.
func plainTx(ctx context.Context, db *sql.DB, insertOrder, insertRow, topic string, id int64, meta string) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, insertOrder, id)
	if err == nil {
		_, err = tx.ExecContext(ctx, insertRow, topic, fmt.Sprintf("%036d", id), []byte(`{"ID":1}`), meta)
	}
	if err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// plain2Table makes plain2_outbox, of the outbox table's shape (its
// columns, defaults and indexes), once per database.
func plain2Table(b *testing.B, db *sql.DB) {
	b.Helper()
	_, err := db.Exec("CREATE TABLE IF NOT EXISTS plain2_outbox (LIKE fxcqrs_outbox INCLUDING ALL)")
	require.NoError(b, err)
}

// outboxSide is the same command through the unit of work, its event
// routed to NATS JetStream and written to the outbox, the outbox's relay
// running; backlog counts its rows not yet relayed, passes the passes its
// relay ran.
func outboxSide(b *testing.B, d database, addr string, ids *atomic.Int64) (call func() error, backlog func() int, passes func() uint64) {
	b.Helper()
	insertOrder := d.Dialect.Rebind("INSERT INTO orders (id) VALUES (?)")
	topic := fmt.Sprintf("load_%d", rand.Uint64())
	dropStreamAtCleanup(b, addr, topic)
	ps, err := natsjs.New(natsjs.Config{URL: addr})
	require.NoError(b, err)
	bus, err := fxbus.New(fxbus.Config{Publisher: ps}, []fxbus.Routing{fxbus.NewRoute[OrderPlaced](topic)}, nil)
	require.NoError(b, err)
	require.NoError(b, bus.Provision(context.Background())) // as fxbus.Module does before the relay starts
	o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: d.Dialect}, nil)
	require.NoError(b, err)
	m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithMiddleware(o.UnitOfWork()),
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
			if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, insertOrder, c.ID); err != nil {
				return err
			}
			fxcqrs.Emit(ctx, OrderPlaced(c))
			return nil
		})))
	require.NoError(b, err)
	require.NoError(b, o.Start(context.Background()))
	b.Cleanup(func() {
		require.NoError(b, o.Stop(context.Background()))
		require.NoError(b, m.Stop(context.Background()))
		_ = ps.Close()
		_, err := d.DB.Exec(d.Dialect.Rebind("DELETE FROM fxcqrs_outbox WHERE topic = ?"), topic)
		require.NoError(b, err)
	})
	count := d.Dialect.Rebind("SELECT COUNT(*) FROM fxcqrs_outbox WHERE topic = ?")
	return func() error {
			return fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: int(ids.Add(1))})
		}, func() int {
			// Called from require.Eventually's goroutine too: b.Error,
			// not FailNow; -1 is never a backlog the caller waits for.
			var n int
			if err := d.DB.QueryRow(count, topic).Scan(&n); err != nil {
				b.Error(err)
				return -1
			}
			return n
		}, func() uint64 { return fxoutbox.Passes(o) }
}

// dropStreamAtCleanup deletes the JetStream stream of topic once t is
// done: the shared server keeps no test's or benchmark's messages.
func dropStreamAtCleanup(t testing.TB, addr, topic string) {
	t.Helper()
	t.Cleanup(func() {
		conn, err := nc.Connect(addr)
		if err != nil {
			return
		}
		defer conn.Close()
		if js, err := conn.JetStream(); err == nil {
			_ = js.DeleteStream(topic)
		}
	})
}

// provisionStream makes topic's stream, as the bus of the service that
// routes to it does when it starts: natsjs publishes only to a
// provisioned topic.
func provisionStream(t testing.TB, addr, topic string) {
	t.Helper()
	ps, err := natsjs.New(natsjs.Config{URL: addr})
	require.NoError(t, err)
	defer ps.Close()
	require.NoError(t, ps.Provision(context.Background(), topic))
}

// relayTo runs a relay of d's outbox into NATS JetStream at addr until b
// is done; wake wakes it, as a unit of work's commit does.
func relayTo(b *testing.B, d database, addr string) (wake func(topic string)) {
	b.Helper()
	ps, err := natsjs.New(natsjs.Config{URL: addr})
	require.NoError(b, err)
	bus, err := fxbus.New(fxbus.Config{Publisher: ps}, nil, nil)
	require.NoError(b, err)
	o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: d.Dialect}, nil)
	require.NoError(b, err)
	require.NoError(b, o.Start(context.Background()))
	b.Cleanup(func() {
		require.NoError(b, o.Stop(context.Background()))
		_ = ps.Close()
	})
	return func(topic string) { fxoutbox.Wake(o, topic) }
}

// plainMetadata is the metadata the bus writes for an OrderPlaced, as the
// plain side's rows carry it.
func plainMetadata(b *testing.B) string {
	b.Helper()
	bus, err := fxbus.New(fxbus.Config{}, nil, nil)
	require.NoError(b, err)
	msg, err := bus.Encode(context.Background(), OrderPlaced{ID: 1})
	require.NoError(b, err)
	meta, err := json.Marshal(msg.Metadata)
	require.NoError(b, err)
	return string(meta)
}
