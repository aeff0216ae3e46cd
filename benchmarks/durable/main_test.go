package durable

import (
	"strings"
	"testing"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	nc "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// database/sql's connection opener outlives a closed *sql.DB by a
		// moment; it is named here, and only it.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}

// natsURL is the JetStream server's address, or skips b.
func natsURL(b testing.TB) string {
	addr := outboxtest.Env("FXCQRS_NATS_URL", "nats://127.0.0.1:4222")
	outboxtest.Reachable(b, "FXCQRS_NATS_URL", strings.TrimPrefix(addr, "nats://"))
	return addr
}

// jetStream connects to addr, closed when b ends.
func jetStream(b testing.TB, addr string) nc.JetStreamContext {
	b.Helper()
	conn, err := nc.Connect(addr)
	require.NoError(b, err)
	b.Cleanup(conn.Close)
	js, err := conn.JetStream(nc.PublishAsyncMaxPending(4096))
	require.NoError(b, err)
	return js
}

// streamHolds reports how many messages topic's stream holds.
func streamHolds(b testing.TB, js nc.JetStreamContext, topic string) uint64 {
	b.Helper()
	info, err := js.StreamInfo(topic)
	if err != nil {
		return 0 // not made yet
	}
	return info.State.Msgs
}

// ordersDB is a PostgreSQL database of b's own with the outbox's tables
// and an orders table, its pool sized as a service would size it: 32
// connections, all kept idle between uses (database/sql keeps 2 by
// default, and reopens the others per call).
func ordersDB(b *testing.B) outboxtest.Database {
	b.Helper()
	d := outboxtest.Open(b, fxoutbox.PostgreSQL)
	d.DB.SetMaxOpenConns(32)
	d.DB.SetMaxIdleConns(32)
	_, err := d.DB.Exec("CREATE TABLE orders (id BIGINT PRIMARY KEY)")
	require.NoError(b, err)
	return d
}
