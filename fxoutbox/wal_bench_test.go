package fxoutbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/require"
)

// BenchmarkUnitOfWorkWAL: what each command costs PostgreSQL, through the
// unit of work with its relay delivering to NATS JetStream ("outbox")
// against plain2 (the order and an outbox-shaped row in a plain
// transaction, nothing relaying it; see BenchmarkUnitOfWorkUnderLoad), at
// 1 to 64 callers: "outbox-walsync/op" and "plain2-walsync/op", the WAL
// flushes per command (pg_stat_wal.wal_sync, the server's, PostgreSQL 15
// and later), "walsync-ratio" the first ÷ the second; "outbox-xact/op"
// and "plain2-xact/op", the transactions per command of the benchmark's
// own database (pg_stat_database.xact_commit: read-only statements
// count, each its own transaction); "ratio2", commands/s of the outbox ÷
// plain2's in the same phases.
//
// PostgreSQL's backends report their counters to the statistics at most
// once a second, and an idle one later still: each side runs in phases
// (two of each, the side that goes first changing), and every phase ends
// with the side's connections closed, which makes their backends report
// before they go, and the outbox's relay drained (its rows deleted). The
// WAL flushes are the whole server's: another database's commits during a
// phase count too, so run it on a quiet server, with -count for
// benchstat, as in -benchtime 4000x -count 6.
func BenchmarkUnitOfWorkWAL(b *testing.B) {
	addr := env("FXCQRS_NATS_URL", "nats://127.0.0.1:4222")
	reachable(b, "FXCQRS_NATS_URL", strings.TrimPrefix(addr, "nats://"))
	admin, d, app := walDatabase(b)
	crashTables(b, d.DB)
	var ids atomic.Int64
	for _, callers := range []int{1, 4, 16, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			d.DB.SetMaxIdleConns(callers + 8)
			outbox, backlog, _ := outboxSide(b, d, addr, &ids)
			plain2 := plain2Side(b, d, &ids)
			sides := [2]func() error{outbox, plain2}
			for _, side := range sides { // unmeasured: connections, lease, stream
				_, err := callConcurrently(max(200, 16*callers), callers, side)
				require.NoError(b, err)
			}
			var (
				spent       [2]time.Duration
				wal, xact   [2]int64
				count       [2]int
				phases      = 2
				polls       int64 // backlog's statements: the benchmark's, not the commands'
				drained     = func() bool { polls++; return backlog() == 0 }
				reportStats = func() walStats { return settleStats(b, admin, d.DB, app, callers+8) }
			)
			require.Eventually(b, drained, time.Minute, time.Millisecond)
			b.ResetTimer()
			for i := range 2 * phases {
				s := (i + i/2) % 2 // outbox, plain2, plain2, outbox
				n := b.N / (2 * phases)
				if i < 2 {
					n += b.N % (2 * phases) / 2
				}
				if n == 0 {
					continue
				}
				b.StopTimer()
				before, polled := reportStats(), polls
				b.StartTimer()
				took, err := callConcurrently(n, callers, sides[s])
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if s == 0 {
					// The relay's deletes are the commands' cost too.
					require.Eventually(b, drained, time.Minute, 5*time.Millisecond)
				}
				after := reportStats()
				b.StartTimer()
				spent[s] += took
				count[s] += n
				wal[s] += after.walSync - before.walSync
				xact[s] += after.xactCommit - before.xactCommit - (polls - polled)
			}
			b.StopTimer()
			if count[0] == 0 || count[1] == 0 {
				return
			}
			perOp := func(v int64, s int) float64 { return float64(v) / float64(count[s]) }
			b.ReportMetric(perOp(wal[0], 0), "outbox-walsync/op")
			b.ReportMetric(perOp(wal[1], 1), "plain2-walsync/op")
			if wal[1] > 0 {
				b.ReportMetric(perOp(wal[0], 0)/perOp(wal[1], 1), "walsync-ratio")
			}
			b.ReportMetric(perOp(xact[0], 0), "outbox-xact/op")
			b.ReportMetric(perOp(xact[1], 1), "plain2-xact/op")
			b.ReportMetric((float64(spent[1])/float64(count[1]))/(float64(spent[0])/float64(count[0])), "ratio2")
		})
	}
}

// walStats is what the server counted so far: its WAL flushes, and the
// commits of the benchmark's database.
type walStats struct{ walSync, xactCommit int64 }

// walDatabase makes a PostgreSQL database of b's own (CREATE DATABASE,
// dropped at the end), so that pg_stat_database counts its transactions
// alone, with the outbox's tables; it returns a pool on the server's
// postgres database, whose own statements count for neither, the
// database, and the application name its connections carry.
func walDatabase(b *testing.B) (admin *sql.DB, d database, app string) {
	b.Helper()
	u, err := url.Parse(env("FXCQRS_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"))
	require.NoError(b, err)
	reachable(b, "FXCQRS_POSTGRES_URL", u.Host)
	name := fmt.Sprintf("fxcqrs_wal_%d", rand.Uint64()%1_000_000_000)
	adminURL := *u
	adminURL.Path = "/postgres"
	admin, err = sql.Open("pgx", adminURL.String())
	require.NoError(b, err)
	b.Cleanup(func() { _ = admin.Close() })
	_, err = admin.Exec("CREATE DATABASE " + name)
	require.NoError(b, err)
	app = name
	own := *u
	own.Path = "/" + name
	q := own.Query()
	q.Set("application_name", app)
	own.RawQuery = q.Encode()
	pool, err := sql.Open("pgx", own.String())
	require.NoError(b, err)
	b.Cleanup(func() {
		_ = pool.Close()
		_, err := admin.Exec("DROP DATABASE " + name + " WITH (FORCE)")
		require.NoError(b, err)
	})
	pool.SetMaxOpenConns(128)
	require.NoError(b, fxoutbox.Migrate(context.Background(), pool, fxoutbox.PostgreSQL, fxoutbox.Tables{}))
	return admin, database{DB: pool, DSN: own.String(), Driver: "pgx", Dialect: fxoutbox.PostgreSQL}, app
}

// settleStats closes pool's idle connections and waits until the server
// has none of app's backends left (each reports its counters as it goes),
// then reads the counters and lets pool keep idle connections again.
func settleStats(b *testing.B, admin, pool *sql.DB, app string, idle int) walStats {
	b.Helper()
	pool.SetMaxIdleConns(0)
	defer pool.SetMaxIdleConns(idle)
	require.Eventually(b, func() bool {
		var n int
		err := admin.QueryRow("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app).Scan(&n)
		return err == nil && n == 0
	}, time.Minute, time.Millisecond)
	var s walStats
	require.NoError(b, admin.QueryRow("SELECT wal_sync FROM pg_stat_wal").Scan(&s.walSync))
	require.NoError(b, admin.QueryRow("SELECT xact_commit FROM pg_stat_database WHERE datname = $1", app).Scan(&s.xactCommit))
	return s
}
