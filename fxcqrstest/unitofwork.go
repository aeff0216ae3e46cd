// Package fxcqrstest tests a service built on fxcqrs the way fxcqrs tests
// itself. A module of its own, so that the SQLite driver it uses stays out
// of a service's production build.
//
// UnitOfWork runs a handler's call in a real transaction of the outbox's
// unit of work on a database of the test's (SQLite in memory by default;
// PostgreSQL or MariaDB through fxoutbox/outboxtest), and reports what the
// call wrote to the outbox and what it emitted in-process, then rolls the
// transaction back (the default: each call leaves the database as it
// found it) or commits it:
//
//	uow := fxcqrstest.NewUnitOfWork(t, fxcqrstest.Routes(fxbus.NewRoute[OrderPlaced]("orders")),
//		fxcqrstest.Handlers(NewPlaceOrder(repo)))
//	res := fxcqrstest.Exec(ctx, uow, PlaceOrder{ID: 7})
//	require.NoError(t, res.Err)
//	assert.Equal(t, "orders", res.Outbox[0].Topic)
package fxcqrstest

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	_ "modernc.org/sqlite" // the default database
)

// UnitOfWork is a mediator whose calls run in the outbox's unit of work
// on a test database, with no relay: what a call writes to the outbox
// stays there to be read. Make one with NewUnitOfWork.
type UnitOfWork struct {
	// DB is the test database: create the handlers' tables in it.
	DB *sql.DB
	// Dialect is DB's.
	Dialect fxoutbox.Dialect
	// Mediator is the mediator the calls run on.
	Mediator *fxcqrs.Mediator

	bus       *fxbus.Bus
	rows      string // the query of the outbox rows written since an id
	scheduled string // the query of the scheduled rows written since an id
}

// Option configures NewUnitOfWork.
type Option func(*options)

type options struct {
	db       *sql.DB
	dialect  fxoutbox.Dialect
	routes   []fxbus.Routing
	commands []any
	requests []any
	events   []any
	deliver  []fxoutbox.Deliverable
	config   fxcqrs.Config
}

// Database runs the calls on db, whose outbox tables are migrated, of
// dialect d (outboxtest.Open makes one on PostgreSQL or MariaDB). Default:
// SQLite in memory, one connection, its own per UnitOfWork.
func Database(db *sql.DB, d fxoutbox.Dialect) Option {
	return func(o *options) { o.db, o.dialect = db, d }
}

// Routes routes events to topics, as fxbus.Route does.
func Routes(routes ...fxbus.Routing) Option {
	return func(o *options) { o.routes = append(o.routes, routes...) }
}

// Handlers registers command handlers (values, as fxcqrs.WithCommandHandlers takes them).
func Handlers(handlers ...any) Option {
	return func(o *options) { o.commands = append(o.commands, handlers...) }
}

// RequestHandlers registers request handlers.
func RequestHandlers(handlers ...any) Option {
	return func(o *options) { o.requests = append(o.requests, handlers...) }
}

// EventHandlers registers event handlers: they run in-process after the
// call's commit, as under the outbox module.
func EventHandlers(handlers ...any) Option {
	return func(o *options) { o.events = append(o.events, handlers...) }
}

// Deliverables registers durable events and schedulable commands
// (fxoutbox.DurableEvent, fxoutbox.ScheduledCommand), as
// fxoutbox.Config.Deliverables does under the outbox: a handler may then
// schedule them (fxoutbox.Schedule, ScheduleAfter, Cancel), and
// Result.Scheduled shows what a call scheduled. Nothing delivers them: a
// UnitOfWork has no relay (a Session runs the whole application).
func Deliverables(ds ...fxoutbox.Deliverable) Option {
	return func(o *options) { o.deliver = append(o.deliver, ds...) }
}

// NewUnitOfWork returns the UnitOfWork of opts; it stops, and closes the
// database it made, when t ends.
func NewUnitOfWork(t testing.TB, opts ...Option) *UnitOfWork {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.db == nil {
		// In memory, shared by the pool's connections (a name of its own:
		// another test's is another database). A write outside the
		// call's transaction, on a second connection, fails at once
		// ("database table is locked") instead of waiting: the kit shows
		// it.
		db, err := sql.Open("sqlite", fmt.Sprintf("file:fxcqrstest-%d?mode=memory&cache=shared", rand.Uint64()))
		must(t, err)
		db.SetMaxOpenConns(4)
		db.SetConnMaxIdleTime(0) // the database lives while a connection does
		t.Cleanup(func() { _ = db.Close() })
		must(t, fxoutbox.Migrate(context.Background(), db, fxoutbox.SQLite, fxoutbox.Tables{}))
		o.db, o.dialect = db, fxoutbox.SQLite
	}
	bus, err := fxbus.New(fxbus.Config{}, o.routes, nil)
	must(t, err)
	out, err := fxoutbox.New(o.db, bus, fxoutbox.Config{Dialect: o.dialect, Requests: true, Deliverables: o.deliver}, nil)
	must(t, err)
	u := &UnitOfWork{
		DB: o.db, Dialect: o.dialect, bus: bus,
		rows:      o.dialect.Rebind("SELECT id, topic, message_id, payload, metadata FROM fxcqrs_outbox WHERE id > ? ORDER BY id"),
		scheduled: o.dialect.Rebind("SELECT id, due_ns, topic, message_id, payload, metadata FROM fxcqrs_outbox_scheduled WHERE id > ? ORDER BY id"),
	}
	m, err := fxcqrs.New(o.config,
		fxcqrs.WithCommandHandlers(o.commands...), fxcqrs.WithRequestHandlers(o.requests...), fxcqrs.WithEventHandlers(o.events...),
		fxcqrs.WithMiddleware(out.UnitOfWork(), rollback{u}), fxcqrs.WithForwarder(out.Forwarder()))
	must(t, err)
	out.DeliverTo(m)
	t.Cleanup(func() { _ = m.Stop(context.Background()) })
	u.Mediator = m
	return u
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Message is what a call wrote to the outbox: one routed event for one
// topic.
type Message struct {
	Topic     string
	MessageID string
	Name      string // the event's name on the wire
	Payload   []byte
	Metadata  map[string]string
}

// Scheduled is what a call scheduled (fxoutbox.Schedule): a message to be
// delivered at At, to its topic (a route's, or the outbox's delivery
// topic for a scheduled command or a durable event).
type Scheduled struct {
	At        time.Time
	Topic     string
	MessageID string // the id Schedule returned, which Cancel takes
	Name      string // the message's name on the wire
	Payload   []byte
	Metadata  map[string]string
}

// Result is what a call did.
type Result struct {
	// Response is a request's response.
	Response any
	// Err is the call's error: its handler's, or its events' (a
	// *fxcqrs.EventError).
	Err error
	// Outbox is what it wrote to the outbox, in order: what the relay
	// would publish after the commit.
	Outbox []Message
	// Scheduled is what it scheduled, in order, and did not cancel
	// (register what it schedules with Deliverables, or route it).
	Scheduled []Scheduled
	// Events is every event its handler emitted, routed or not, in order.
	Events []any
	// Committed reports whether its transaction committed (Commit).
	Committed bool
}

// CallOption configures one call.
type CallOption func(*call)

type call struct{ commit bool }

// Commit commits the call's transaction instead of rolling it back.
func Commit() CallOption { return func(c *call) { c.commit = true } }

// Exec runs cmd as fxcqrs.Exec does, in u's unit of work, and returns
// what it did. The transaction is rolled back unless Commit: the test's
// next call finds the database as this one found it, and the in-process
// event handlers, which run after a commit, do not run.
func Exec[C any](ctx context.Context, u *UnitOfWork, cmd C, opts ...CallOption) Result {
	return u.run(ctx, opts, func(ctx context.Context) (any, error) {
		return nil, fxcqrs.Exec(ctx, u.Mediator, cmd)
	})
}

// Send runs req as fxcqrs.Send does, in u's unit of work (as Exec), and
// returns what it did, its response in Result.Response.
func Send[Res, Req any](ctx context.Context, u *UnitOfWork, req Req, opts ...CallOption) Result {
	return u.run(ctx, opts, func(ctx context.Context) (any, error) {
		return fxcqrs.Send[Res](ctx, u.Mediator, req)
	})
}

type captureKey struct{}

// capture is what the rollback middleware saw of one call.
type capture struct {
	commit      bool
	events      []any
	written     []Message
	scheduled   []Scheduled
	before      int64 // the outbox's last id before the call
	beforeSched int64 // the scheduled table's
	err         error
}

func (u *UnitOfWork) run(ctx context.Context, opts []CallOption, do func(context.Context) (any, error)) Result {
	var c call
	for _, opt := range opts {
		opt(&c)
	}
	cp := &capture{commit: c.commit}
	if err := u.DB.QueryRowContext(ctx, "SELECT COALESCE(MAX(id), 0) FROM fxcqrs_outbox").Scan(&cp.before); err != nil {
		return Result{Err: fmt.Errorf("fxcqrstest: the outbox: %w", err)}
	}
	if err := u.DB.QueryRowContext(ctx, "SELECT COALESCE(MAX(id), 0) FROM fxcqrs_outbox_scheduled").Scan(&cp.beforeSched); err != nil {
		return Result{Err: fmt.Errorf("fxcqrstest: the scheduled messages: %w", err)}
	}
	res, err := do(context.WithValue(ctx, captureKey{}, cp))
	if errors.Is(err, errRolledBack) {
		err = nil // the rollback the test asked for
	}
	out := Result{Response: res, Err: errors.Join(err, cp.err), Events: cp.events, Committed: c.commit && err == nil}
	if out.Committed {
		out.Outbox, out.Err = u.written(ctx, cp.before, out.Err)
		var serr error
		out.Scheduled, serr = u.scheduledSince(ctx, u.DB, cp.beforeSched)
		out.Err = errors.Join(out.Err, serr)
	} else {
		out.Outbox, out.Scheduled = cp.written, cp.scheduled
	}
	return out
}

// querier is a *sql.DB or a *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// scheduledSince reads, through q, the scheduled rows written after id
// before.
func (u *UnitOfWork) scheduledSince(ctx context.Context, q querier, before int64) ([]Scheduled, error) {
	rows, err := q.QueryContext(ctx, u.scheduled, before)
	if err != nil {
		return nil, fmt.Errorf("fxcqrstest: the scheduled messages: %w", err)
	}
	defer rows.Close()
	var out []Scheduled
	for rows.Next() {
		var s Scheduled
		var id, due int64
		var meta string
		if err := rows.Scan(&id, &due, &s.Topic, &s.MessageID, &s.Payload, &meta); err != nil {
			return out, err
		}
		if err := json.Unmarshal([]byte(meta), &s.Metadata); err != nil {
			return out, err
		}
		s.At, s.Name = time.Unix(0, due), s.Metadata[fxbus.MetadataName]
		out = append(out, s)
	}
	return out, rows.Err()
}

// written reads the outbox rows written after id before.
func (u *UnitOfWork) written(ctx context.Context, before int64, err error) ([]Message, error) {
	rows, qerr := u.DB.QueryContext(ctx, u.rows, before)
	if qerr != nil {
		return nil, errors.Join(err, qerr)
	}
	defer rows.Close()
	var out []Message
	for rows.Next() {
		var m Message
		var id int64
		var meta string
		if serr := rows.Scan(&id, &m.Topic, &m.MessageID, &m.Payload, &meta); serr != nil {
			return out, errors.Join(err, serr)
		}
		if jerr := json.Unmarshal([]byte(meta), &m.Metadata); jerr != nil {
			return out, errors.Join(err, jerr)
		}
		m.Name = m.Metadata[fxbus.MetadataName]
		out = append(out, m)
	}
	return out, errors.Join(err, rows.Err())
}

// errRolledBack is how the rollback middleware makes the unit of work
// roll back a call that succeeded.
var errRolledBack = errors.New("fxcqrstest: rolled back, as the test asked")

// rollback runs inside the unit of work: it records what the handler
// emitted, the messages the unit of work is about to write, and, unless
// the call commits, fails the call so that the unit of work rolls it
// back.
type rollback struct{ u *UnitOfWork }

func (rollback) MiddlewareOrder() int { return fxoutbox.OrderUnitOfWork + 1 }

func (r rollback) Handle(ctx context.Context, c fxcqrs.Call, next fxcqrs.Next) (any, error) {
	cp, _ := ctx.Value(captureKey{}).(*capture)
	if cp == nil || c.Kind == fxcqrs.KindEvent {
		return next(ctx)
	}
	res, err := next(ctx)
	if err != nil {
		return res, err
	}
	cp.events = append(cp.events, fxcqrs.Emitted(ctx)...)
	if cp.commit {
		return res, nil
	}
	if tx := fxoutbox.Tx(ctx); tx != nil {
		var err error
		if cp.scheduled, err = r.u.scheduledSince(ctx, tx, cp.beforeSched); err != nil {
			cp.err = errors.Join(cp.err, err)
		}
	}
	msgs, fails := r.u.bus.Messages(ctx, cp.events)
	for _, f := range fails {
		cp.err = errors.Join(cp.err, f.Err)
	}
	for _, m := range msgs {
		cp.written = append(cp.written, Message{
			Topic: m.Topic, MessageID: m.Message.UUID, Name: m.Message.Metadata.Get(fxbus.MetadataName),
			Payload: m.Message.Payload, Metadata: m.Message.Metadata,
		})
	}
	return res, errRolledBack
}
