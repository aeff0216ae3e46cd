package sqlspy_test

import (
	"context"
	"database/sql/driver"
	"io"
	"sync"
	"testing"

	"github.com/fxcqrs/fxcqrs/internal/sqlspy"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The hooks hear every statement a connection is given, and a
// connection is busy from a statement's start to its result or its
// rows' close, and from a transaction's begin to its commit, the
// statements in it included.
func TestHooksTellStatementsAndBusyConnections(t *testing.T) {
	t.Parallel()
	var (
		mu     sync.Mutex
		events []string
	)
	tell := func(e string) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, e)
	}
	told := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), events...)
	}
	db := sqlspy.Open(fakeDriver{}, "", sqlspy.Hooks{
		Statement: func(q string) { tell("statement " + q) },
		Busy:      func(what string) { tell("busy " + what) },
		Idle:      func() { tell("idle") },
	})
	t.Cleanup(func() { _ = db.Close() })
	db.SetMaxOpenConns(1)
	ctx := context.Background()

	_, err := db.ExecContext(ctx, "A")
	require.NoError(t, err)
	rows, err := db.QueryContext(ctx, "B")
	require.NoError(t, err)
	assert.Equal(t, []string{"statement A", "busy A", "idle", "statement B", "busy B"}, told(), "busy while its rows are open")
	require.NoError(t, rows.Close())

	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	_, err = tx.ExecContext(ctx, "C")
	require.NoError(t, err)
	rows, err = tx.QueryContext(ctx, "D")
	require.NoError(t, err)
	require.NoError(t, rows.Close())
	require.NoError(t, tx.Commit())

	stmt, err := db.PrepareContext(ctx, "E")
	require.NoError(t, err)
	require.NoError(t, stmt.Close())
	require.NoError(t, db.PingContext(ctx))

	assert.Equal(t, []string{
		"statement A", "busy A", "idle",
		"statement B", "busy B", "idle",
		"busy BEGIN", "statement C", "statement D", "idle",
		"statement E",
		"busy ping", "idle",
	}, told())
}

// The wrapped driver still converts its own argument types: database/sql
// refuses a struct it does not know.
func TestTheDriversArgumentTypesPassThrough(t *testing.T) {
	t.Parallel()
	db := sqlspy.Open(fakeDriver{}, "", sqlspy.Hooks{})
	t.Cleanup(func() { _ = db.Close() })
	_, err := db.ExecContext(context.Background(), "A", point{1, 2})
	assert.NoError(t, err)
}

// point is an argument type only fakeConn accepts.
type point struct{ x, y int }

// fakeDriver's connections run every statement, at once, without a
// database: an Exec affects a row, a Query returns one.
type fakeDriver struct{}

func (fakeDriver) Open(string) (driver.Conn, error) { return fakeConn{}, nil }

type fakeConn struct{}

func (fakeConn) Prepare(string) (driver.Stmt, error) { return fakeStmt{}, nil }
func (fakeConn) Close() error                        { return nil }
func (fakeConn) Begin() (driver.Tx, error)           { return fakeTx{}, nil }

func (fakeConn) BeginTx(context.Context, driver.TxOptions) (driver.Tx, error) {
	return fakeTx{}, nil
}

func (fakeConn) ExecContext(context.Context, string, []driver.NamedValue) (driver.Result, error) {
	return driver.RowsAffected(1), nil
}

func (fakeConn) QueryContext(context.Context, string, []driver.NamedValue) (driver.Rows, error) {
	return &fakeRows{}, nil
}

func (fakeConn) Ping(context.Context) error { return nil }

func (fakeConn) CheckNamedValue(v *driver.NamedValue) error {
	if _, ok := v.Value.(point); ok {
		return nil
	}
	return driver.ErrSkip
}

type fakeStmt struct{}

func (fakeStmt) Close() error                               { return nil }
func (fakeStmt) NumInput() int                              { return -1 }
func (fakeStmt) Exec([]driver.Value) (driver.Result, error) { return driver.RowsAffected(1), nil }
func (fakeStmt) Query([]driver.Value) (driver.Rows, error)  { return &fakeRows{}, nil }

type fakeTx struct{}

func (fakeTx) Commit() error   { return nil }
func (fakeTx) Rollback() error { return nil }

type fakeRows struct{ done bool }

func (*fakeRows) Columns() []string { return []string{"n"} }
func (*fakeRows) Close() error      { return nil }

func (r *fakeRows) Next(dest []driver.Value) error {
	if r.done {
		return io.EOF
	}
	r.done = true
	dest[0] = int64(1)
	return nil
}
