package fxcqrstest_test

import (
	"context"
	"testing"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxcqrstest"
	"github.com/stretchr/testify/require"
)

// The unit-of-work test as docs/testing.md shows it: the handler runs in
// a real transaction on an in-memory SQLite database, and the result says
// what it wrote to the outbox and what it emitted; the transaction is
// rolled back unless the call asks for fxcqrstest.Commit().
//
// A test, not an Example with // Output:, because the kit takes the
// test's testing.TB and an Example gets none. It could be handed a fake
// (a struct that embeds testing.TB gets the interface's unexported
// method), but the snippet would then show code no user writes, and the
// fake would panic on the first TB method the kit calls that it lacks.
func TestExampleUnitOfWork(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// snippet:unitofwork
	uow := fxcqrstest.NewUnitOfWork(t,
		fxcqrstest.Routes(fxbus.NewRoute[OrderPlaced]("orders")),
		fxcqrstest.Handlers(placeOrder{}))
	_, err := uow.DB.Exec("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
	require.NoError(t, err)

	res := fxcqrstest.Exec(ctx, uow, PlaceOrder{ID: 7}) // or fxcqrstest.Commit()
	require.NoError(t, res.Err)
	require.Equal(t, "orders", res.Outbox[0].Topic) // and Name, Payload, Metadata
	require.Equal(t, []any{OrderPlaced{ID: 7}, Audited{ID: 7}}, res.Events)
	require.False(t, res.Committed)
	// end snippet
}
