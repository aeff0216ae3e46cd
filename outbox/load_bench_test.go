package fxoutbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	fxbus "github.com/fxcqrs/fxcqrs/bus"
	"github.com/fxcqrs/fxcqrs/bus/natsjs"
	fxoutbox "github.com/fxcqrs/fxcqrs/outbox"
	"github.com/stretchr/testify/require"
)

// BenchmarkUnitOfWorkUnderLoad: commands/s from 2 to 32 callers, each
// command a transaction that inserts its order and an outbox-shaped row,
// on PostgreSQL: through the unit of work with the relay running and
// delivering to NATS JetStream, against a plain transaction with the same
// two INSERTs, its rows delivered by a relay that each commit wakes as the
// unit of work's commits wake theirs (FXCQRS_BENCH_PLAIN_POLLS=1 leaves it
// polling: it then falls behind and the plain side pays less), in the
// same run. "backlog" is the rows still in the outbox when the callers
// stop: the relay keeping up or not.
func BenchmarkUnitOfWorkUnderLoad(b *testing.B) {
	addr := env("FXCQRS_NATS_URL", "nats://127.0.0.1:4222")
	reachable(b, "FXCQRS_NATS_URL", strings.TrimPrefix(addr, "nats://"))
	d := openDatabase(b, fxoutbox.PostgreSQL)
	crashTables(b, d.DB)
	insertOrder := d.Dialect.Rebind("INSERT INTO orders (id) VALUES (?)")
	insertRow := d.Dialect.Rebind("INSERT INTO fxcqrs_outbox (topic, message_id, payload, metadata) VALUES (?, ?, ?, ?)")
	var ids atomic.Int64
	// RunParallel runs parallelism × GOMAXPROCS goroutines. Past 32 the
	// database's connection limit (100 here) is what is measured.
	for _, par := range []int{1, 4, 16} {
		callers := par * runtime.GOMAXPROCS(0)
		b.Run(fmt.Sprintf("callers=%d/plain", callers), func(b *testing.B) {
			topic := fmt.Sprintf("plain_%d", rand.Uint64())
			ctx := context.Background()
			// A relay delivers the plain transactions' rows too, woken by
			// each commit as the unit of work wakes its own: both sides
			// pay for the same delivery on the same two cores, at once.
			stop, wake := relayTo(b, d, addr)
			defer stop()
			// The row is shaped as the unit of work's are: a message id as
			// long, and metadata as the bus writes it (name, content type,
			// correlation id), so that the relay and the broker move the
			// same bytes on both sides.
			meta := plainMetadata(b)
			b.SetParallelism(par)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					id := ids.Add(1)
					tx, err := d.DB.BeginTx(ctx, nil)
					if err == nil {
						_, err = tx.ExecContext(ctx, insertOrder, id)
					}
					if err == nil {
						_, err = tx.ExecContext(ctx, insertRow, topic, fmt.Sprintf("%036d", id), []byte(`{"ID":1}`), meta)
					}
					if err == nil {
						err = tx.Commit()
					}
					if err == nil && os.Getenv("FXCQRS_BENCH_PLAIN_POLLS") == "" {
						wake(topic)
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(count(b, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox")), "backlog")
			stop()
			_, err := d.DB.Exec(d.Dialect.Rebind("DELETE FROM fxcqrs_outbox WHERE topic = ?"), topic)
			require.NoError(b, err)
		})
		b.Run(fmt.Sprintf("callers=%d/outbox", callers), func(b *testing.B) {
			topic := fmt.Sprintf("load_%d", rand.Uint64())
			ps, err := natsjs.New(natsjs.Config{URL: addr})
			require.NoError(b, err)
			defer ps.Close()
			bus, err := fxbus.New(fxbus.Config{Publisher: ps}, []fxbus.Routing{fxbus.NewRoute[OrderPlaced](topic)}, nil)
			require.NoError(b, err)
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
			relay := os.Getenv("FXCQRS_BENCH_NO_RELAY") == "" // set it to see the relay's share of the cost
			if relay {
				require.NoError(b, o.Start(context.Background()))
			}
			b.SetParallelism(par)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: int(ids.Add(1))}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(count(b, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox")), "backlog")
			if relay {
				require.NoError(b, o.Stop(context.Background()))
			}
			require.NoError(b, m.Stop(context.Background()))
			_, err = d.DB.Exec(d.Dialect.Rebind("DELETE FROM fxcqrs_outbox WHERE topic = ?"), topic)
			require.NoError(b, err)
		})
	}
}

// relayTo runs a relay of d's outbox into NATS JetStream at addr until the
// returned function is called (again is harmless); wake wakes it, as a
// unit of work's commit does.
func relayTo(b *testing.B, d database, addr string) (stop func(), wake func(topic string)) {
	b.Helper()
	ps, err := natsjs.New(natsjs.Config{URL: addr})
	require.NoError(b, err)
	bus, err := fxbus.New(fxbus.Config{Publisher: ps}, nil, nil)
	require.NoError(b, err)
	o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: d.Dialect}, nil)
	require.NoError(b, err)
	require.NoError(b, o.Start(context.Background()))
	var once sync.Once
	return func() {
		once.Do(func() {
			require.NoError(b, o.Stop(context.Background()))
			_ = ps.Close()
		})
	}, func(topic string) { fxoutbox.Wake(o, topic) }
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
