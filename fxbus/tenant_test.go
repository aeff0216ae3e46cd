package fxbus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tenantBus starts a bus of cfg over gc with routes and subs, and a
// mediator with handlers, until the test ends.
func tenantBus(t *testing.T, gc message.Publisher, sub message.Subscriber, cfg fxbus.Config, routes []fxbus.Routing, subs []fxbus.Subscription, handlers ...fxcqrs.Option) *fxcqrs.Mediator {
	t.Helper()
	cfg.Publisher, cfg.Subscriber = gc, sub
	b, err := fxbus.New(cfg, routes, subs)
	require.NoError(t, err)
	m, err := fxcqrs.New(fxcqrs.Config{}, append(handlers, fxcqrs.WithForwarder(b))...)
	require.NoError(t, err)
	require.NoError(t, b.Start(context.Background(), m))
	t.Cleanup(func() {
		assert.NoError(t, b.Stop(context.Background()))
		assert.NoError(t, m.Stop(context.Background()))
	})
	return m
}

// The tenant set at the edge travels in the routed message's metadata to
// another service's handler, and the event that handler emits carries it
// back; work without a tenant stays the default tenant's, with no tenant
// metadata at all.
func TestTenantTravels(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	placed, paid := topic(t, "orders"), topic(t, "payments")
	raw, err := gc.Subscribe(context.Background(), placed)
	require.NoError(t, err)
	seen := newInbox[string]()
	tenants := fxbus.StaticTenants("acme", "globex")
	tenantBus(t, gc, gc, fxbus.Config{Tenants: tenants},
		[]fxbus.Routing{fxbus.NewRoute[OrderPaid](paid)},
		[]fxbus.Subscription{fxbus.NewSubscription[OrderPlaced](placed)},
		fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
			if fxbus.MessageID(ctx) == "" {
				return nil
			}
			seen.add("billing " + fxbus.TenantOf(ctx))
			fxcqrs.Emit(ctx, OrderPaid{ID: e.ID})
			return nil
		})))
	orders := tenantBus(t, gc, gc, fxbus.Config{Tenants: tenants},
		[]fxbus.Routing{fxbus.NewRoute[OrderPlaced](placed)},
		[]fxbus.Subscription{fxbus.NewSubscription[OrderPaid](paid)},
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
			fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID})
			return nil
		})),
		fxcqrs.WithEventHandlers(eventFunc[OrderPaid](func(ctx context.Context, _ OrderPaid) error {
			seen.add("orders " + fxbus.TenantOf(ctx))
			return nil
		})))

	require.NoError(t, fxcqrs.Exec(fxbus.WithTenant(context.Background(), "acme"), orders, PlaceOrder{ID: 1}))
	assert.ElementsMatch(t, []string{"billing acme", "orders acme"}, seen.wait(t, 2))
	msg := <-raw
	msg.Ack()
	assert.Equal(t, "acme", msg.Metadata.Get(fxbus.MetadataTenant))

	require.NoError(t, fxcqrs.Exec(context.Background(), orders, PlaceOrder{ID: 2}))
	assert.ElementsMatch(t, []string{"billing acme", "orders acme", "billing ", "orders "}, seen.wait(t, 4),
		"without a tenant: the default tenant's, on both sides")
	msg = <-raw
	msg.Ack()
	_, has := msg.Metadata[fxbus.MetadataTenant]
	assert.False(t, has, "the default tenant's message has no tenant metadata: it reads as before tenants existed")
}

// countingTenants is a Tenants that counts what it was asked.
type countingTenants struct {
	fxbus.Tenants
	mu    sync.Mutex
	asked []string
}

func (c *countingTenants) Resolve(ctx context.Context, id string) (string, error) {
	c.mu.Lock()
	c.asked = append(c.asked, id)
	c.mu.Unlock()
	return c.Tenants.Resolve(ctx, id)
}

func (c *countingTenants) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.asked...)
}

// tenantMessage is an OrderPlaced of id on the wire, with the tenant
// metadata set to tenant (even empty) unless absent.
func tenantMessage(id int, tenant string, absent bool) *message.Message {
	msg := orderMessage(id, "")
	if !absent {
		msg.Metadata[fxbus.MetadataTenant] = tenant
	}
	return msg
}

// A message whose tenant the application does not know, or that is no
// tenant id at all (an injection, 10 KB, empty, invalid UTF-8, a control
// character), goes to the dead letter at once, unhandled and not retried,
// with the reason ("unknown tenant", the id escaped and cut short); the
// ids that are no tenant ids never reach the application's Tenants. A
// known tenant's message and one without a tenant are handled.
func TestUntrustedTenantIsDeadLettered(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	tp := topic(t, "orders")
	dead := deadLetters(t, gc, tp+"_poison")
	rec := newDeadLetterLog()
	tenants := &countingTenants{Tenants: fxbus.StaticTenants("acme")}
	type got struct {
		id     int
		tenant string
	}
	handled := newInbox[got]()
	b := consumeOrders(t, gc, gc, tp, fxbus.Config{Tenants: tenants, DeadLetters: rec},
		func(ctx context.Context, e OrderPlaced) error {
			handled.add(got{e.ID, fxbus.TenantOf(ctx)})
			return nil
		},
		fxbus.Retry(fxbus.RetryPolicy{MaxRetries: 3, InitialInterval: time.Millisecond, MaxInterval: time.Millisecond}))

	injection := `x"; DROP SCHEMA public CASCADE; --`
	huge := strings.Repeat("a", 10<<10)
	bad := map[string]*message.Message{
		"injection":    tenantMessage(1, injection, false),
		"10 KB":        tenantMessage(2, huge, false),
		"empty":        tenantMessage(3, "", false),
		"invalid UTF8": tenantMessage(4, "acme\xff\xfe", false),
		"control":      tenantMessage(5, "acme\nglobex", false),
		"unknown":      tenantMessage(6, "globex", false),
	}
	for _, msg := range bad {
		require.NoError(t, gc.Publish(tp, msg))
	}
	require.NoError(t, gc.Publish(tp, tenantMessage(7, "acme", false)))
	require.NoError(t, gc.Publish(tp, tenantMessage(8, "", true)))

	reasons := map[string]string{}
	for range bad {
		msg := <-dead
		msg.Ack()
		reasons[msg.UUID] = msg.Metadata.Get(middleware.ReasonForPoisonedKey)
	}
	for name, msg := range bad {
		reason := reasons[msg.UUID]
		assert.True(t, strings.HasPrefix(reason, "unknown tenant "), "%s: %s", name, reason)
		assert.Less(t, len(reason), 200, "%s: the reason is short, whatever the id's length", name)
		assert.ErrorIs(t, rec.reason(msg.UUID), fxbus.ErrUnknownTenant, "%s: the recorder is told why", name)
	}
	assert.Equal(t, `unknown tenant "x\"; DROP SCHEMA public CASCADE; --": not one of the 1 known`, reasons[bad["injection"].UUID])
	assert.Equal(t, `unknown tenant "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"… (10240 bytes): longer than 128 bytes`, reasons[bad["10 KB"].UUID])
	assert.Equal(t, `unknown tenant "": empty (a message of the default tenant has no tenant metadata)`, reasons[bad["empty"].UUID])
	assert.Equal(t, `unknown tenant "acme\xff\xfe": not valid UTF-8`, reasons[bad["invalid UTF8"].UUID])
	assert.Equal(t, `unknown tenant "acme\nglobex": contains control characters`, reasons[bad["control"].UUID])

	assert.ElementsMatch(t, []got{{7, "acme"}, {8, ""}}, handled.wait(t, 2), "only the known tenant's and the default tenant's are handled")
	require.Eventually(t, func() bool { return b.Stats().Handled == 2 }, time.Minute, time.Millisecond)
	st := b.Stats()
	assert.Equal(t, uint64(6), st.DeadLettered)
	assert.Zero(t, st.Retried, "an unknown tenant's message is not retried")
	assert.ElementsMatch(t, []string{injection, "globex", "acme"}, tenants.all(),
		"asked once each; what is no tenant id never reaches the application")
}

// Without Config.Tenants the bus knows no tenant: a message naming one is
// dead-lettered; one without is handled as before.
func TestNoTenantsKnowsOnlyTheDefault(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	tp := topic(t, "orders")
	dead := deadLetters(t, gc, tp+"_poison")
	handled := newInbox[int]()
	consumeOrders(t, gc, gc, tp, fxbus.Config{},
		func(_ context.Context, e OrderPlaced) error { handled.add(e.ID); return nil })
	named := tenantMessage(1, "acme", false)
	require.NoError(t, gc.Publish(tp, named))
	require.NoError(t, gc.Publish(tp, tenantMessage(2, "", true)))
	msg := <-dead
	msg.Ack()
	assert.Equal(t, named.UUID, msg.UUID)
	assert.Equal(t, `unknown tenant "acme": the bus knows no tenants (fxbus.Config.Tenants)`, msg.Metadata.Get(middleware.ReasonForPoisonedKey))
	assert.Equal(t, []int{2}, handled.wait(t, 1))
}

// A Tenants that cannot tell now (an error that does not wrap
// ErrUnknownTenant) fails the attempt, which is retried; the handler gets
// the tenant Tenants resolved, not the metadata's text.
func TestTenantResolverErrorIsRetried(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	tp := topic(t, "orders")
	var (
		mu    sync.Mutex
		calls int
	)
	tenants := fxbus.TenantsFunc(func(_ context.Context, id string) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if calls++; calls == 1 {
			return "", errors.New("the tenants table is locked")
		}
		return strings.ToLower(id), nil
	})
	handled := newInbox[string]()
	b := consumeOrders(t, gc, gc, tp, fxbus.Config{Tenants: tenants},
		func(ctx context.Context, _ OrderPlaced) error { handled.add(fxbus.TenantOf(ctx)); return nil },
		fxbus.Retry(fxbus.RetryPolicy{MaxRetries: 3, InitialInterval: time.Millisecond, MaxInterval: time.Millisecond}))
	require.NoError(t, gc.Publish(tp, tenantMessage(1, "ACME", false)))
	assert.Equal(t, []string{"acme"}, handled.wait(t, 1))
	require.Eventually(t, func() bool { return b.Stats().Handled == 1 }, time.Minute, time.Millisecond)
	assert.Equal(t, uint64(1), b.Stats().Retried)
	assert.Zero(t, b.Stats().DeadLettered)
}

// A CloudEvents route writes the tenant as the tenantid extension
// attribute; a foreign CloudEvent's tenantid is the message's tenant,
// resolved as any other (an empty one dead-lettered).
func TestTenantCloudEvents(t *testing.T) {
	t.Parallel()
	for _, structured := range []bool{false, true} {
		t.Run(map[bool]string{false: "binary", true: "structured"}[structured], func(t *testing.T) {
			t.Parallel()
			b, err := fxbus.New(fxbus.Config{Publisher: goChannel(t)}, []fxbus.Routing{
				fxbus.NewRoute[OrderPlaced]("orders", fxbus.CloudEvents(fxbus.CloudEventsConfig{Source: "/orders", Structured: structured})),
			}, nil)
			require.NoError(t, err)
			out, fails := b.Messages(fxbus.WithTenant(context.Background(), "acme"), []any{OrderPlaced{ID: 1}})
			require.Empty(t, fails)
			require.Len(t, out, 1)
			if structured {
				var env map[string]any
				require.NoError(t, json.Unmarshal(out[0].Message.Payload, &env))
				assert.Equal(t, "acme", env["tenantid"])
			} else {
				assert.Equal(t, "acme", out[0].Message.Metadata.Get("ce_tenantid"))
			}
			out, _ = b.Messages(context.Background(), []any{OrderPlaced{ID: 2}})
			if structured {
				assert.NotContains(t, string(out[0].Message.Payload), "tenantid", "the default tenant: no attribute")
			} else {
				assert.NotContains(t, out[0].Message.Metadata, "ce_tenantid", "the default tenant: no attribute")
			}
		})
	}

	gc := goChannel(t)
	tp := topic(t, "ce_in")
	dead := deadLetters(t, gc, tp+"_poison")
	handled := newInbox[string]()
	consumeOrders(t, gc, gc, tp, fxbus.Config{Tenants: fxbus.StaticTenants("acme")},
		func(ctx context.Context, _ OrderPlaced) error { handled.add(fxbus.TenantOf(ctx)); return nil })
	foreign := func(tenant string) *message.Message {
		m := message.NewMessage("", []byte(`{"id":1}`))
		m.Metadata = message.Metadata{
			"ce_specversion": "1.0", "ce_id": watermill.NewUUID(), "ce_source": "/elsewhere", "ce_type": "OrderPlaced",
			"ce_tenantid": tenant, "content-type": "application/json",
		}
		return m
	}
	require.NoError(t, gc.Publish(tp, foreign("acme")))
	assert.Equal(t, []string{"acme"}, handled.wait(t, 1))
	empty := foreign("")
	require.NoError(t, gc.Publish(tp, empty))
	msg := <-dead
	msg.Ack()
	assert.Equal(t, empty.Metadata.Get("ce_id"), msg.UUID)
	assert.Contains(t, msg.Metadata.Get(middleware.ReasonForPoisonedKey), `unknown tenant "": empty`)
}

// TenantHandler serves a request under the tenant its Tenants resolved,
// the default tenant when none is named; it refuses one that is unknown
// or no tenant id at all (403, without echoing it, next never called),
// and answers 503 when Tenants cannot tell.
func TestTenantHandler(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	tenants := fxbus.TenantsFunc(func(_ context.Context, id string) (string, error) {
		switch id {
		case "ACME":
			return "acme", nil
		case "down":
			return "", errors.New("the tenants table is locked")
		}
		return "", fmt.Errorf("%w: not here", fxbus.ErrUnknownTenant)
	})
	h := fxbus.TenantHandler(tenants, func(r *http.Request) string { return r.Header.Get("X-Tenant") },
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			fmt.Fprintf(w, "tenant=%q", fxbus.TenantOf(r.Context()))
		}))
	for _, c := range []struct {
		header string
		code   int
		body   string
	}{
		{"ACME", http.StatusOK, `tenant="acme"`},
		{"", http.StatusOK, `tenant=""`},
		{`x"; DROP SCHEMA`, http.StatusForbidden, "unknown tenant"},
		{strings.Repeat("a", 10<<10), http.StatusForbidden, "unknown tenant"},
		{"acme\xff", http.StatusForbidden, "unknown tenant"},
		{"down", http.StatusServiceUnavailable, "the tenant cannot be resolved now"},
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header["X-Tenant"] = []string{c.header}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r.WithContext(fxbus.WithTenant(r.Context(), "leftover")))
		assert.Equal(t, c.code, w.Code, "%.20q", c.header)
		assert.Equal(t, c.body, strings.TrimSpace(w.Body.String()), "%.20q", c.header)
	}
	assert.Equal(t, int32(2), calls.Load(), "next runs only for a known tenant or none")
}
