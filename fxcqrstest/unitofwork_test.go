package fxcqrstest_test

import (
	"context"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxcqrstest"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"))
}

type (
	PlaceOrder  struct{ ID int }
	OrderPlaced struct{ ID int }
	Audited     struct{ ID int }
)

// placeOrder writes the order through the unit of work's transaction and
// emits a routed event and an in-process one.
type placeOrder struct{}

func (placeOrder) Handle(ctx context.Context, c PlaceOrder) error {
	if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, "INSERT INTO orders (id) VALUES (?)", c.ID); err != nil {
		return err
	}
	fxcqrs.Emit(ctx, OrderPlaced(c))
	fxcqrs.Emit(ctx, Audited(c))
	return nil
}

func newKit(t *testing.T, handler any) *fxcqrstest.UnitOfWork {
	t.Helper()
	uow := fxcqrstest.NewUnitOfWork(t, fxcqrstest.Routes(fxbus.NewRoute[OrderPlaced]("orders")), fxcqrstest.Handlers(handler))
	_, err := uow.DB.Exec("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
	require.NoError(t, err)
	return uow
}

func orders(t *testing.T, uow *fxcqrstest.UnitOfWork) int {
	t.Helper()
	return outboxtest.Count(t, uow.DB, "SELECT COUNT(*) FROM orders")
}

// A handler's call in a real transaction: what it would write to the
// outbox and what it emitted, then rolled back; or committed.
func TestUnitOfWork(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	uow := newKit(t, placeOrder{})

	res := fxcqrstest.Exec(ctx, uow, PlaceOrder{ID: 7})
	require.NoError(t, res.Err)
	require.Len(t, res.Outbox, 1)
	assert.Equal(t, "orders", res.Outbox[0].Topic)
	assert.Equal(t, "OrderPlaced", res.Outbox[0].Name)
	assert.JSONEq(t, `{"ID":7}`, string(res.Outbox[0].Payload))
	assert.Equal(t, []any{OrderPlaced{ID: 7}, Audited{ID: 7}}, res.Events)
	assert.False(t, res.Committed)
	assert.Zero(t, orders(t, uow), "rolled back")

	res = fxcqrstest.Exec(ctx, uow, PlaceOrder{ID: 7}, fxcqrstest.Commit())
	require.NoError(t, res.Err)
	assert.True(t, res.Committed)
	require.Len(t, res.Outbox, 1, "read back from the outbox table")
	assert.Equal(t, "orders", res.Outbox[0].Topic)
	assert.Equal(t, 1, orders(t, uow))

	res = fxcqrstest.Exec(ctx, uow, PlaceOrder{ID: 7})
	require.Error(t, res.Err, "the same id again: the handler's own error")
	assert.Empty(t, res.Outbox)
}

// leaky writes on the pool, outside the call's transaction: what a test
// of it must catch.
type leaky struct{ uow **fxcqrstest.UnitOfWork }

func (h leaky) Handle(ctx context.Context, c PlaceOrder) error {
	if _, err := (*h.uow).DB.ExecContext(ctx, "INSERT INTO orders (id) VALUES (?)", c.ID); err != nil {
		return err
	}
	fxcqrs.Emit(ctx, OrderPlaced(c))
	return nil
}

// A handler that writes outside the transaction is caught: its write
// fails while the transaction holds the database, or, if it got in,
// outlives the rollback, which the test sees.
func TestUnitOfWorkCatchesAWriteOutsideTheTransaction(t *testing.T) {
	t.Parallel()
	var uow *fxcqrstest.UnitOfWork
	uow = newKit(t, leaky{&uow})
	res := fxcqrstest.Exec(context.Background(), uow, PlaceOrder{ID: 8})
	caught := res.Err != nil || orders(t, uow) != 0
	assert.True(t, caught, "a write outside the unit of work went unnoticed")
	t.Logf("caught by: err=%v, rows after the rollback=%d", res.Err, orders(t, uow))
}

// careless ignores its write's failure and emits all the same.
type careless struct{}

func (careless) Handle(ctx context.Context, c PlaceOrder) error {
	_, _ = fxoutbox.Tx(ctx).ExecContext(ctx, "INSERT INTO orders (id) VALUES ($1)", c.ID) // its error dropped
	fxcqrs.Emit(ctx, OrderPlaced(c))
	return nil
}

// On PostgreSQL, a handler that emits after a failed write is caught:
// the transaction is aborted, and the unit of work's write of the event
// fails the call.
func TestUnitOfWorkCatchesAnEmitAfterAFailedWrite(t *testing.T) {
	t.Parallel()
	d := outboxtest.Open(t, fxoutbox.PostgreSQL)
	uow := fxcqrstest.NewUnitOfWork(t, fxcqrstest.Database(d.DB, d.Dialect),
		fxcqrstest.Routes(fxbus.NewRoute[OrderPlaced]("orders")), fxcqrstest.Handlers(careless{}))
	_, err := uow.DB.Exec("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
	require.NoError(t, err)
	require.NoError(t, fxcqrstest.Exec(context.Background(), uow, PlaceOrder{ID: 9}, fxcqrstest.Commit()).Err)
	res := fxcqrstest.Exec(context.Background(), uow, PlaceOrder{ID: 9}, fxcqrstest.Commit())
	require.Error(t, res.Err, "the event of a failed write reached the outbox")
	assert.False(t, res.Committed)
	assert.Equal(t, 1, outboxtest.Count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox"), "only the first call's")
}

type (
	HoldRoom   struct{ ID int }
	ExpireHold struct{ ID int }
)

// holdRoom holds a room and schedules the hold's expiry an hour on.
type holdRoom struct{}

func (holdRoom) Handle(ctx context.Context, c HoldRoom) error {
	_, err := fxoutbox.ScheduleAfter(ctx, time.Hour, ExpireHold(c))
	return err
}

type expireHold struct{}

func (expireHold) Handle(context.Context, ExpireHold) error { return nil }

// A handler that schedules a command: registered with Deliverables, the
// schedule is written in the call's transaction and shown in the result,
// rolled back or committed.
func TestUnitOfWorkSchedules(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	uow := fxcqrstest.NewUnitOfWork(t,
		fxcqrstest.Handlers(holdRoom{}, expireHold{}),
		fxcqrstest.Deliverables(fxoutbox.ScheduledCommand[ExpireHold]()))

	before := time.Now()
	res := fxcqrstest.Exec(ctx, uow, HoldRoom{ID: 3})
	require.NoError(t, res.Err)
	require.Len(t, res.Scheduled, 1)
	s := res.Scheduled[0]
	assert.Equal(t, "ExpireHold", s.Name)
	assert.JSONEq(t, `{"ID":3}`, string(s.Payload))
	assert.NotEmpty(t, s.MessageID)
	assert.WithinRange(t, s.At, before.Add(time.Hour), time.Now().Add(time.Hour))
	assert.Zero(t, outboxtest.Count(t, uow.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_scheduled"), "rolled back")

	res = fxcqrstest.Exec(ctx, uow, HoldRoom{ID: 4}, fxcqrstest.Commit())
	require.NoError(t, res.Err)
	require.Len(t, res.Scheduled, 1)
	assert.JSONEq(t, `{"ID":4}`, string(res.Scheduled[0].Payload))
	assert.Equal(t, 1, outboxtest.Count(t, uow.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_scheduled"), "committed")
}

// Without Deliverables the schedule is refused, naming the option.
func TestUnitOfWorkScheduleUnregistered(t *testing.T) {
	t.Parallel()
	uow := fxcqrstest.NewUnitOfWork(t, fxcqrstest.Handlers(holdRoom{}))
	res := fxcqrstest.Exec(context.Background(), uow, HoldRoom{ID: 1})
	assert.ErrorContains(t, res.Err, "nothing delivers")
	assert.Empty(t, res.Scheduled)
}
