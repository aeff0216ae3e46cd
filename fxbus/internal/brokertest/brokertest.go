// Package brokertest finds the brokers the bus's tests run against, and
// holds the harness the adapters' kill-and-restart tests share.
package brokertest

import (
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

// Address returns env's value, or def, once its host answers: a URL
// (nats://, amqp://) or a bare host:port. An unreachable one skips t,
// naming env, or fails it when FXCQRS_REQUIRE_SERVICES=1 (as in CI).
func Address(t testing.TB, env, def string) string {
	t.Helper()
	addr := os.Getenv(env)
	if addr == "" {
		addr = def
	}
	host, shown := addr, addr
	if strings.Contains(addr, "://") {
		u, err := url.Parse(addr)
		if err != nil {
			t.Fatalf("%s=%s: %v", env, addr, err)
		}
		host, shown = u.Host, u.Redacted()
	}
	conn, err := net.DialTimeout("tcp", host, 2*time.Second)
	if err != nil {
		if os.Getenv("FXCQRS_REQUIRE_SERVICES") == "1" {
			t.Fatalf("%s=%s is unreachable and FXCQRS_REQUIRE_SERVICES=1: %v", env, shown, err)
		}
		t.Skipf("%s=%s is unreachable (%v): set %s to a running server, or FXCQRS_REQUIRE_SERVICES=1 to fail instead", env, shown, err, env)
	}
	_ = conn.Close()
	return addr
}
