package fxoutbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
	"go.uber.org/zap"
)

type txKey struct{}

// unit is one unit of work's transaction and the outbox rows written in
// it, nested calls' included: a commit that wrote none wakes no relay.
type unit struct {
	// The context of the calls the unit wraps, once within has made the
	// unit that context: it carries the unit without an allocation of
	// its own (context.WithValue's).
	context.Context

	tx      *sql.Tx
	u       *unitOfWork
	q       *schema.Queries // its store's statements (the store's own: a unit copies none)
	store   string          // its store's tenant: "" the default store
	release func()          // gives its place in the connection budget back
	ended   bool            // committed or rolled back: its place given back
	wrote   int
	lanes   []schema.Lane // where it wrote, each once: the relay's hint (in lane0 while it is one)
	lane0   [1]schema.Lane
	due     int64                   // the earliest due time of what it scheduled, in ns; 0: none
	after   []func(context.Context) // AfterCommit's
}

// Tx returns the transaction of the unit of work ctx belongs to, for the
// handler's repositories to write in, or nil outside a unit of work.
func Tx(ctx context.Context) *sql.Tx {
	if un := unitOf(ctx); un != nil {
		return un.tx
	}
	return nil
}

// within makes un the context of the calls it wraps: ctx, with un as
// its value of txKey.
func (un *unit) within(ctx context.Context) context.Context {
	un.Context = ctx
	return un
}

// Value is the unit for txKey, else its context's value.
func (un *unit) Value(key any) any {
	if _, ok := key.(txKey); ok {
		return un
	}
	return un.Context.Value(key)
}

func unitOf(ctx context.Context) *unit {
	un, _ := ctx.Value(txKey{}).(*unit)
	return un
}

// ErrNoUnitOfWork is returned by Schedule, Cancel and AfterCommit called
// outside a unit of work: a schedule is written in the handler's
// transaction, so that it exists if and only if the handler's writes
// commit.
var ErrNoUnitOfWork = errors.New("fxoutbox: no unit of work in the context: schedule from a handler the outbox's unit of work wraps")

// AfterCommit arranges for fn to run once the unit of work of ctx has
// committed, on the goroutine that committed it, before the call that
// began the unit of work returns; if it rolls back, fn never runs. fn gets
// a context outside that unit of work: the calls it makes through the
// mediator are units of work of their own, not joined to the one that
// committed, and not taken for redeliveries of the inbound message that
// began it (the inbox records none of them under its id). It keeps the
// rest of ctx: cancellation, the mediator's call, the message's
// correlation.
//
// It is what fxsaga uses to go on with a saga's next steps once the step
// that resumed it has committed. A crash after the commit and before fn
// ran or finished loses fn: use it for work that something else recovers
// (the saga's recovery, here), never as the only record of work to do.
//
// It returns ErrNoUnitOfWork outside a unit of work.
func AfterCommit(ctx context.Context, fn func(ctx context.Context)) error {
	un := unitOf(ctx)
	if un == nil {
		return ErrNoUnitOfWork
	}
	un.after = append(un.after, fn)
	return nil
}

// afterKey marks a context given to an AfterCommit function: the unit of
// work records nothing in the inbox under it.
type afterKey struct{}

// runAfter runs the functions un's commit was waiting for.
func (un *unit) runAfter(ctx context.Context) {
	if len(un.after) == 0 {
		return
	}
	ctx = context.WithValue(context.WithValue(ctx, txKey{}, (*unit)(nil)), afterKey{}, true)
	for _, fn := range un.after {
		fn(ctx)
	}
}

// OrderUnitOfWork is the unit of work's middleware position: inside
// Retry (each attempt has a transaction of its own, so a failed attempt's
// writes are rolled back with it) and inside Timeout.
const OrderUnitOfWork = fxcqrs.OrderRetry + 100

// unitOfWork is the middleware that wraps a handler in a transaction and
// writes the routed events it emitted to the outbox before it commits.
type unitOfWork struct {
	stores *stores // where each tenant's transactions begin
	budget *budget // Config.MaxConnections; nil: none
	bus    *fxbus.Bus
	local  *deliverer // what is durable, and where it goes
	sender interface {
		WroteIn(store string, lanes []schema.Lane)
	} // the relay: told where a commit wrote rows
	inbox   bool
	eagerEv bool                   // event handlers get a transaction before they run
	now     func() time.Time       // the outbox's clock: what the inbox records
	lanes   func(topic string) int // how many lanes topic's keyed rows are spread over
	topics  boxedTopics            // the topics' names as insert's arguments

	duplicates atomic.Uint64 // inbound handlings skipped: the inbox had them
}

func (u *unitOfWork) MiddlewareOrder() int { return OrderUnitOfWork }

func (u *unitOfWork) Handle(ctx context.Context, call fxcqrs.Call, next fxcqrs.Next) (any, error) {
	if call.Kind == fxcqrs.KindStream {
		return next(ctx) // a stream's items are not one unit of work
	}
	if outer := unitOf(ctx); outer != nil {
		// A call nested in another's unit of work joins it: when it is
		// the same store's. A call for another tenant's store cannot
		// commit in this one's transaction.
		st, err := u.stores.of(ctx)
		if err != nil {
			return nil, fmt.Errorf("fxoutbox: begin: %w", err)
		}
		if st.id != outer.store {
			return nil, fmt.Errorf("fxoutbox: a call for tenant %s inside a unit of work of tenant %s: its writes cannot commit in another tenant's store; "+
				"make it from a context outside the unit of work (AfterCommit), or send it as a message", quoteTenant(st.id), quoteTenant(outer.store))
		}
		out, err := next(ctx)
		if err == nil {
			err = u.write(ctx, outer)
		}
		return out, err
	}
	inbound := u.inboxed(ctx, call.Kind)
	if call.Kind == fxcqrs.KindEvent && !u.eagerEv && !inbound {
		return u.lazy(ctx, next)
	}
	un, err := u.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer un.rollbackOnPanic()
	tx := un.tx
	ctx = un.within(ctx)
	if inbound {
		res, err := tx.ExecContext(ctx, un.q.InboxInsert, call.Handler, fxbus.MessageID(ctx), u.now().UnixNano())
		if err == nil {
			var n int64
			if n, err = res.RowsAffected(); err == nil && n == 0 {
				// This handler has handled this message: a redelivery.
				u.duplicates.Add(1)
				return nil, un.rollback()
			}
		}
		if err != nil {
			_ = un.rollback()
			return nil, fmt.Errorf("fxoutbox: inbox: %w", err)
		}
	}
	out, err := next(ctx)
	if err == nil {
		err = u.write(ctx, un)
	}
	if err == nil && inbound {
		err = fenced(ctx)
	}
	if err != nil {
		return out, errors.Join(err, un.rollback())
	}
	if err := un.commit(); err != nil {
		return out, err
	}
	u.committed(un)
	un.runAfter(ctx)
	return out, nil
}

// begin begins a unit of work's transaction on the store of ctx's tenant
// (fxbus.TenantOf), under the connection budget.
func (u *unitOfWork) begin(ctx context.Context) (*unit, error) {
	st, err := u.stores.of(ctx)
	if err != nil {
		return nil, fmt.Errorf("fxoutbox: begin: %w", err)
	}
	return u.beginOn(ctx, st)
}

// beginOn begins a transaction on st: a place in the connection budget
// first (waited for on ctx), then BeginTx on st's database, then, for a
// schema per tenant, the schema as the transaction's search_path, by a
// parameter, gone at the transaction's end.
func (u *unitOfWork) beginOn(ctx context.Context, st *store) (*unit, error) {
	release, err := u.budget.take(ctx)
	if err != nil {
		return nil, err
	}
	tx, err := st.db.BeginTx(ctx, nil)
	if err != nil {
		release()
		return nil, fmt.Errorf("fxoutbox: begin: %w", err)
	}
	if st.schema != "" {
		if _, err := tx.ExecContext(ctx, schema.SetSchema, st.schema); err != nil {
			_ = tx.Rollback()
			release()
			return nil, fmt.Errorf("fxoutbox: begin: tenant %s: set the schema: %w", quoteTenant(st.id), err)
		}
	}
	// Its context until within makes it another's: a unit of InTenant's
	// or lazy's is never a nil Context.
	return &unit{Context: ctx, tx: tx, u: u, q: &st.q, store: st.id, release: release}, nil
}

// commit commits un's transaction and gives its place in the budget
// back.
func (un *unit) commit() error {
	un.ended = true
	defer un.release()
	if err := un.tx.Commit(); err != nil {
		return fmt.Errorf("fxoutbox: commit: %w", err)
	}
	return nil
}

// rollback rolls un's transaction back (one already done is no error)
// and gives its place in the budget back.
func (un *unit) rollback() error {
	un.ended = true
	defer un.release()
	return schema.Rollback(un.tx)
}

// rollbackOnPanic, deferred, rolls un back when the code it wraps
// panics (a handler: the mediator's Recover turns the panic into an
// error further out), then panics on: the connection and the place in
// the budget are not held for good.
func (un *unit) rollbackOnPanic() {
	if v := recover(); v != nil {
		if !un.ended { // a panic after the commit (an AfterCommit function's) has nothing to undo
			_ = un.rollback()
		}
		panic(v)
	}
}

// inboxed reports whether a call of kind under ctx records its handler in
// the inbox: an event handler of an inbound message when Config.Inbox is
// on, and every handler the relay's own delivery runs (a durable event's,
// a scheduled command's).
func (u *unitOfWork) inboxed(ctx context.Context, kind fxcqrs.Kind) bool {
	if fxbus.MessageID(ctx) == "" || ctx.Value(afterKey{}) != nil {
		return false
	}
	_, local := deliveryOf(ctx)
	switch kind {
	case fxcqrs.KindEvent:
		return u.inbox || local
	case fxcqrs.KindCommand:
		return local
	}
	return false
}

// committed wakes the relay for what un wrote: rows now, schedules at
// their time.
func (u *unitOfWork) committed(un *unit) {
	if un.wrote > 0 {
		u.sender.WroteIn(un.store, un.lanes)
	}
	if un.due != 0 {
		u.stores.scheduledAt(un.store, un.due)
	}
}

// lazy runs an event handler without a transaction, and writes the routed
// follow-ups it emitted in a transaction of their own.
func (u *unitOfWork) lazy(ctx context.Context, next fxcqrs.Next) (any, error) {
	out, err := next(ctx)
	if err != nil || !u.writes(fxcqrs.Emitted(ctx)) {
		return out, err
	}
	un, err := u.begin(ctx)
	if err != nil {
		return out, err
	}
	if err := u.write(ctx, un); err != nil {
		return out, errors.Join(err, un.rollback())
	}
	if err := un.commit(); err != nil {
		return out, err
	}
	u.committed(un)
	return out, nil
}

// writes reports whether any of events goes to the outbox: routed or
// durable.
func (u *unitOfWork) writes(events []any) bool {
	for _, ev := range events {
		if t := reflect.TypeOf(ev); u.bus.Forwards(t) || u.local.registry().durable(t) {
			return true
		}
	}
	return false
}

// write inserts the routed events the handler of ctx emitted, in emit
// order, then its durable ones (see writeLocal), in un's transaction, and
// counts them on un.
func (u *unitOfWork) write(ctx context.Context, un *unit) error {
	if err := u.writeRouted(ctx, un, fxcqrs.Emitted(ctx)); err != nil {
		return err
	}
	fxcqrs.MarkForwarded(ctx) // written: the mediator's Forwarder (see leftovers) leaves them
	return u.writeLocal(ctx, un)
}

// writeRouted inserts the routed ones of events in un's transaction.
func (u *unitOfWork) writeRouted(ctx context.Context, un *unit, events []any) error {
	out, fails := u.bus.Messages(ctx, events)
	if len(fails) > 0 {
		return &fxbus.PublishError{Failures: fails}
	}
	for _, o := range out {
		if err := u.insert(ctx, un, o.Topic, o.Message); err != nil {
			return err
		}
	}
	return nil
}

// insert writes msg as a row of topic in un's transaction.
func (u *unitOfWork) insert(ctx context.Context, un *unit, topic string, msg *message.Message) error {
	var buf [256]byte
	meta := appendMetadata(buf[:0], msg.Metadata)
	l := schema.Lane{Topic: topic, N: u.laneOf(topic, msg)}
	// The topic's name goes as the interface value boxed once per topic:
	// boxed here, each row's insert allocated a copy of its header. (The
	// variadic slice stays on the stack: database/sql keeps none of it.)
	if _, err := un.tx.ExecContext(ctx, un.q.Insert, u.topics.boxed(topic), l.N, msg.UUID, []byte(msg.Payload), string(meta), u.now().UnixNano()); err != nil {
		return fmt.Errorf("fxoutbox: write to the outbox: %w", err)
	}
	un.wrote++
	if !slices.Contains(un.lanes, l) {
		if un.lanes == nil {
			un.lanes = un.lane0[:0] // the common case, one lane: no allocation of its own
		}
		un.lanes = append(un.lanes, l)
	}
	return nil
}

// laneOf is the lane of topic that msg's row goes in: by its key, if it
// has one.
func (u *unitOfWork) laneOf(topic string, msg *message.Message) int {
	key := msg.Metadata.Get(fxbus.MetadataKey)
	if key == "" || u.lanes == nil {
		return 0
	}
	return schema.LaneOf(key, u.lanes(topic))
}

// writeLocal withdraws the durable events the handler of ctx emitted from
// the mediator's in-memory processing and writes them as rows of the
// delivery topic in un's transaction.
func (u *unitOfWork) writeLocal(ctx context.Context, un *unit) error {
	reg := u.local.registry()
	if len(reg.events) == 0 {
		return nil
	}
	events := fxcqrs.Withdraw(ctx, reg.durable)
	if len(events) == 0 {
		return nil
	}
	depth, err := followUpDepth(ctx, events[0])
	if err != nil {
		return err
	}
	for _, ev := range events {
		msg, err := u.bus.Encode(ctx, ev)
		if err != nil {
			return fmt.Errorf("fxoutbox: encode %T: %w", ev, err)
		}
		u.bus.StampDeliverBy(ctx, msg, ev)
		msg.Metadata.Set(MetadataDepth, strconv.Itoa(depth))
		if err := u.insert(ctx, un, u.local.topic, msg); err != nil {
			return err
		}
	}
	return nil
}

// leftovers is the mediator's Forwarder under the outbox. The unit of work
// writes what the calls it wraps emitted, and marks it so; what no unit of
// work wrapped (a stream's items) reaches leftovers, which writes the
// routed events in a transaction of their own: through the outbox, never
// published directly, never lost. A durable event there has no
// transaction to be written in, and its handlers run from memory: it says
// so, once per type, instead of weakening the promise in silence.
type leftovers struct {
	u      *unitOfWork
	log    *zap.Logger
	warned sync.Map // reflect.Type → struct{}
}

func (l *leftovers) Forwards(t reflect.Type) bool {
	return l.u.bus.Forwards(t) || l.u.local.registry().durable(t)
}

func (l *leftovers) Forward(ctx context.Context, events []any) error {
	routed := events[:0:0]
	for _, ev := range events {
		t := reflect.TypeOf(ev)
		if l.u.bus.Forwards(t) {
			routed = append(routed, ev)
		}
		if l.u.local.registry().durable(t) {
			if _, seen := l.warned.LoadOrStore(t, struct{}{}); !seen {
				l.log.Warn("a durable event was emitted where no unit of work runs (a stream item, or a call the unit of work is not scoped to): "+
					"its handlers run from memory, best-effort, and a crash after the call loses them; emit it from a command",
					zap.Stringer("event", t))
			}
		}
	}
	if len(routed) == 0 {
		return nil
	}
	events = routed
	un, err := l.u.begin(ctx)
	if err != nil {
		return err
	}
	if err := l.u.writeRouted(ctx, un, events); err != nil {
		return errors.Join(err, un.rollback())
	}
	if err := un.commit(); err != nil {
		return err
	}
	l.u.committed(un)
	return nil
}

// boxedTopics keeps each topic's name boxed as an interface value, the
// way a statement's arguments take it: a row's insert then boxes no copy
// of a name that every row of its topic repeats. It is read without a
// lock (a map replaced whole when a topic is added; a service routes to
// a handful), and keeps at most maxBoxedTopics names.
type boxedTopics struct {
	mu sync.Mutex
	m  atomic.Pointer[map[string]any]
}

// maxBoxedTopics bounds boxedTopics: names computed per message (a topic
// per tenant, say) are boxed per row past it, as before, not kept.
const maxBoxedTopics = 256

// boxed is topic as an interface value.
func (b *boxedTopics) boxed(topic string) any {
	if m := b.m.Load(); m != nil {
		if v, ok := (*m)[topic]; ok {
			return v
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	old := b.m.Load()
	if old != nil {
		if v, ok := (*old)[topic]; ok {
			return v
		}
		if len(*old) >= maxBoxedTopics {
			return topic
		}
	}
	m := make(map[string]any, 1+lenOf(old))
	if old != nil {
		maps.Copy(m, *old)
	}
	v := any(topic)
	m[topic] = v
	b.m.Store(&m)
	return v
}

// lenOf is the length of *m, 0 for nil.
func lenOf(m *map[string]any) int {
	if m == nil {
		return 0
	}
	return len(*m)
}
