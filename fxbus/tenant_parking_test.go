package fxbus_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Parking per tenant: a key parked by one tenant's message holds back
// that tenant's later messages of it, never another tenant's.

// keyParking is a parkingLog that parks a key only when a message of it
// was recorded as parked, as the outbox's Admin does by its table.
type keyParking struct{ *deadLetterLog }

var _ fxbus.Parking = keyParking{}

func (p keyParking) RecordParked(_ context.Context, _, _ string, msg *message.Message, reason error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.parked[msg.Metadata.Get(fxbus.MetadataKey)] = reason
	return nil
}

func (p keyParking) ParkedKeys(context.Context, string) ([]fxbus.ParkedKey, error) { return nil, nil }

func (p keyParking) Admit(_ context.Context, _, key string, _ *message.Message) (fxbus.Admission, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.parked[key]; ok {
		return fxbus.AdmitParked, nil
	}
	return fxbus.AdmitFree, nil
}

func (p keyParking) Arrived(context.Context, string, string, string) error       { return nil }
func (p keyParking) Repark(context.Context, string, string, string, error) error { return nil }

// Under InOrder, a message of an unknown tenant does not park its key (a
// key is as untrusted as the tenant beside it: parking it would let
// anyone hold back a tenant's key); the key's next message is handled.
func TestUnknownTenantDoesNotParkItsKey(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	tp := topic(t, "keyed")
	dead := deadLetters(t, gc, tp+"_poison")
	rec := newDeadLetterLog()
	handled := newInbox[int]()
	consumeOrders(t, gc, gc, tp, fxbus.Config{Tenants: fxbus.StaticTenants("acme"), DeadLetters: keyParking{rec}},
		func(_ context.Context, e OrderPlaced) error { handled.add(e.ID); return nil }, fxbus.InOrder())
	forged := tenantMessage(1, "globex", false)
	next := tenantMessage(2, "acme", false)
	forged.Metadata.Set(fxbus.MetadataKey, "k")
	next.Metadata.Set(fxbus.MetadataKey, "k")
	require.NoError(t, gc.Publish(tp, forged))
	(<-dead).Ack()
	require.NoError(t, gc.Publish(tp, next))
	assert.Equal(t, []int{2}, handled.wait(t, 1), "the key's next message is handled")
	assert.ErrorIs(t, rec.reason(forged.UUID), fxbus.ErrUnknownTenant, "recorded as a dead letter")
	rec.mu.Lock()
	defer rec.mu.Unlock()
	assert.Empty(t, rec.parked, "nothing parked")
}

// tenantParking parks a key per tenant, as the outbox's stores do, and
// notes each message it is asked about.
type tenantParking struct {
	mu     sync.Mutex
	parked map[fxbus.ParkedKey]bool
	asked  chan *message.Message
}

var _ fxbus.Parking = (*tenantParking)(nil)

func (p *tenantParking) RecordDeadLetter(context.Context, string, *message.Message, error) error {
	return nil
}

func (p *tenantParking) RecordParked(_ context.Context, _, key string, msg *message.Message, _ error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.parked[fxbus.ParkedKey{Tenant: msg.Metadata.Get(fxbus.MetadataTenant), Key: key}] = true
	return nil
}

func (p *tenantParking) ParkedKeys(context.Context, string) ([]fxbus.ParkedKey, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var keys []fxbus.ParkedKey
	for k := range p.parked {
		keys = append(keys, k)
	}
	return keys, nil
}

func (p *tenantParking) Admit(_ context.Context, _, key string, msg *message.Message) (fxbus.Admission, error) {
	p.asked <- msg
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.parked[fxbus.ParkedKey{Tenant: msg.Metadata.Get(fxbus.MetadataTenant), Key: key}] {
		return fxbus.AdmitParked, nil
	}
	return fxbus.AdmitFree, nil
}

func (p *tenantParking) Arrived(context.Context, string, string, string) error       { return nil }
func (p *tenantParking) Repark(context.Context, string, string, string, error) error { return nil }

// A key is parked per tenant: tenant x's message of key k that fails for
// good holds back x's later messages of k, while tenant y's message of k
// is handled without asking the Parking (the bus knows y has nothing
// parked there), and does not make the bus forget x's park.
func TestKeyIsParkedPerTenant(t *testing.T) {
	t.Parallel()
	parking, handled, publish := keyedOrders(t, fxbus.StaticTenants("x", "y"), "x")
	publish(2, "y") // one after the other: GoChannel hands concurrent publishes over in any order
	assert.Equal(t, []int{2}, handled.wait(t, 1), "y's message of k is handled")
	next := publish(3, "x")
	select {
	case asked := <-parking.asked:
		assert.Equal(t, next.UUID, asked.UUID, "the Parking is asked about x's next message of k, never y's")
	case <-time.After(30 * time.Second):
		t.Fatal("x's next message of k was not asked about: the bus forgot x's park")
	}
	publish(4, "y")
	assert.Equal(t, []int{2, 4}, handled.wait(t, 2), "y's messages of k are handled, x's next is parked")
	assert.Empty(t, parking.asked, "y's messages were never asked about")
}

// oldParking is a Parking as written before keys were parked per tenant:
// its ParkedKeys returns the keys alone.
type oldParking struct{ *deadLetterLog }

func (oldParking) ParkedKeys(context.Context, string) ([]string, error) { return nil, nil }

// A Parking left with the old ParkedKeys is no Parking any more, and the
// bus would never park a key with it: New refuses it, saying how to mend
// it, rather than running without parking.
func TestAParkingOfKeysAloneIsRefused(t *testing.T) {
	_, err := fxbus.New(fxbus.Config{DeadLetters: oldParking{newDeadLetterLog()}}, nil, nil)
	require.Error(t, err)
	assert.ErrorContains(t, err, "ParkedKeys returning []string")
	assert.ErrorContains(t, err, "return []fxbus.ParkedKey")
}

// A tenant's messages that name it in two ways (a resolver that
// lowercases ids) share its parks: X's message of k waits behind x's
// parked one, and the Parking records and is asked about the resolved id.
func TestKeyIsParkedPerResolvedTenant(t *testing.T) {
	t.Parallel()
	lower := fxbus.TenantsFunc(func(_ context.Context, id string) (string, error) { return strings.ToLower(id), nil })
	parking, handled, publish := keyedOrders(t, lower, "X")
	next := publish(2, "x")
	select {
	case asked := <-parking.asked:
		assert.Equal(t, next.UUID, asked.UUID, "the Parking is asked about x's message of k")
		assert.Equal(t, "x", asked.Metadata.Get(fxbus.MetadataTenant))
	case <-time.After(30 * time.Second):
		t.Fatal("x's message of k was not asked about: X's park was not x's")
	}
	publish(3, "y")
	assert.Equal(t, []int{3}, handled.wait(t, 1), "another tenant's message of k is handled, x's is parked")
	parking.mu.Lock()
	defer parking.mu.Unlock()
	assert.Equal(t, map[fxbus.ParkedKey]bool{{Tenant: "x", Key: "k"}: true}, parking.parked, "recorded under the resolved id")
}

// downParking is a Parking whose store of tenant x is down until up: its
// parked keys cannot be read ({x, ""}) and its Admit of x's messages
// fails. Nothing is parked. It notes each message it is asked about.
type downParking struct {
	up    atomic.Bool
	reads atomic.Int32 // ParkedKeys
	asked chan string  // the message ids asked about, as long as it holds them
	mu    sync.Mutex
	ids   map[string]int // how often each message id was asked about
}

var _ fxbus.Parking = (*downParking)(nil)

func (p *downParking) RecordDeadLetter(context.Context, string, *message.Message, error) error {
	return nil
}

func (p *downParking) RecordParked(context.Context, string, string, *message.Message, error) error {
	return errors.New("nothing fails in this test")
}

func (p *downParking) ParkedKeys(context.Context, string) ([]fxbus.ParkedKey, error) {
	p.reads.Add(1)
	if p.up.Load() {
		return nil, nil
	}
	return []fxbus.ParkedKey{{Tenant: "x", Key: ""}}, nil
}

func (p *downParking) Admit(_ context.Context, _, _ string, msg *message.Message) (fxbus.Admission, error) {
	p.mu.Lock()
	p.ids[msg.UUID]++
	p.mu.Unlock()
	select {
	case p.asked <- msg.UUID:
	default:
	}
	if msg.Metadata.Get(fxbus.MetadataTenant) == "x" && !p.up.Load() {
		return 0, errors.New("x's store is down")
	}
	return fxbus.AdmitFree, nil
}

func (p *downParking) askedAbout(id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ids[id]
}

func (p *downParking) Arrived(context.Context, string, string, string) error       { return nil }
func (p *downParking) Repark(context.Context, string, string, string, error) error { return nil }

// A tenant whose parked keys cannot be read ({x, ""}: its store down)
// does not fail the bus's start: every keyed message of x's is asked
// about, and waits (redelivered) while its Admit fails, as y's keyed
// messages are handled without asking; once x's store answers, x's
// message is handled, the parked keys are read again, and x's next
// keyed message is no more asked about, x having none parked.
func TestTenantWhoseParkedKeysCannotBeRead(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	tp := topic(t, "keyed")
	parking := &downParking{asked: make(chan string, 64), ids: map[string]int{}}
	handled := newInbox[int]()
	consumeOrders(t, gc, gc, tp, fxbus.Config{Tenants: fxbus.StaticTenants("x", "y"), DeadLetters: parking},
		func(_ context.Context, e OrderPlaced) error {
			handled.add(e.ID)
			return nil
		},
		fxbus.InOrder())
	publish := func(id int, tenant, key string) *message.Message {
		msg := tenantMessage(id, tenant, false)
		msg.Metadata.Set(fxbus.MetadataKey, key)
		require.NoError(t, gc.Publish(tp, msg))
		return msg
	}
	// askedTwice waits until the Parking was asked about id twice: its
	// Admit failed, and it came again.
	askedTwice := func(id string) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for parking.askedAbout(id) < 2 {
			select {
			case <-parking.asked:
			case <-deadline:
				t.Fatalf("message %s was asked about %d times", id, parking.askedAbout(id))
			}
		}
	}
	first := publish(1, "x", "k")
	askedTwice(first.UUID)
	other := publish(2, "y", "j")
	assert.Equal(t, []int{2}, handled.wait(t, 1), "y's keyed message is handled while x's store is down")
	askedTwice(first.UUID)
	assert.Equal(t, []int{2}, handled.all(), "x's keyed message waits")
	free := publish(3, "x", "")
	assert.Equal(t, []int{2, 3}, handled.wait(t, 2), "x's message without a key is handled")

	parking.up.Store(true)
	assert.Equal(t, []int{2, 3, 1}, handled.wait(t, 3), "x's keyed message is handled once its store answers")
	reads := parking.reads.Load()
	assert.GreaterOrEqual(t, reads, int32(2), "the parked keys are read again")
	next := publish(4, "x", "k")
	assert.Equal(t, []int{2, 3, 1, 4}, handled.wait(t, 4))
	assert.Zero(t, parking.askedAbout(next.UUID), "x's next keyed message is not asked about: x has nothing parked")
	assert.Zero(t, parking.askedAbout(other.UUID), "y's message was never asked about")
	assert.Zero(t, parking.askedAbout(free.UUID), "nor a message without a key")
	assert.Equal(t, reads, parking.reads.Load(), "read again once")
}

// keyedOrders consumes OrderPlaced of key k in order, under tenants, with
// a tenantParking; order 1 fails for good. It publishes order 1 of
// tenant first and waits for its dead letter (which parks k for it),
// and returns the parking, the orders handled and how to publish an
// order of a tenant.
func keyedOrders(t *testing.T, tenants fxbus.Tenants, first string) (*tenantParking, *inbox[int], func(id int, tenant string) *message.Message) {
	t.Helper()
	gc := goChannel(t)
	tp := topic(t, "keyed")
	dead := deadLetters(t, gc, tp+"_poison")
	parking := &tenantParking{parked: map[fxbus.ParkedKey]bool{}, asked: make(chan *message.Message, 8)}
	handled := newInbox[int]()
	consumeOrders(t, gc, gc, tp, fxbus.Config{Tenants: tenants, DeadLetters: parking},
		func(_ context.Context, e OrderPlaced) error {
			if e.ID == 1 {
				return errors.New("ledger refuses it")
			}
			handled.add(e.ID)
			return nil
		},
		fxbus.InOrder(), fxbus.Retry(fxbus.RetryPolicy{MaxRetries: -1}))
	publish := func(id int, tenant string) *message.Message {
		msg := tenantMessage(id, tenant, false)
		msg.Metadata.Set(fxbus.MetadataKey, "k")
		require.NoError(t, gc.Publish(tp, msg))
		return msg
	}
	publish(1, first)
	select {
	case m := <-dead:
		m.Ack()
	case <-time.After(30 * time.Second):
		t.Fatalf("%s's failing message was not dead-lettered", first)
	}
	return parking, handled, publish
}
