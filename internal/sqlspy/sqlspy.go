// Package sqlspy is a database/sql driver for the repository's tests
// that wraps another and tells the test what its connections do: each
// statement they are given, and when each is busy (running a statement,
// or holding a transaction open). One wrapper, so that a test that
// counts statements and one that checks the connection budget observe
// a pool by the same rules.
package sqlspy

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"sync"
)

// Hooks are what a spy's connections tell; a nil hook is not called.
// The hooks of a pool of more than one connection are called from as
// many goroutines.
type Hooks struct {
	// Statement is called with the text of each statement a connection
	// is given (an Exec, a Query or a Prepare, in a transaction or not),
	// before it runs.
	Statement func(query string)
	// Busy is called when a connection becomes busy: it runs a statement
	// outside a transaction, until its result, or a query's rows are
	// closed; or it begins a transaction ("BEGIN"), until its commit or
	// rollback; or it is pinged ("ping"). what is the statement's text.
	// Idle is called when it is no longer busy.
	Busy func(what string)
	// Idle is called at the end of each Busy.
	Idle func()
}

// Open returns a pool of drv's connections to dsn (drv from an open
// pool's Driver()), each told to h. The caller closes it.
func Open(drv driver.Driver, dsn string, h Hooks) *sql.DB {
	return sql.OpenDB(connector{drv: drv, dsn: dsn, h: h})
}

type connector struct {
	drv driver.Driver
	dsn string
	h   Hooks
}

func (c connector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.drv.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	return &spyConn{Conn: conn, h: c.h}, nil
}

func (c connector) Driver() driver.Driver { return c.drv }

// spyConn tells h of the statements of the connection it wraps. database/sql
// uses a connection from one goroutine at a time: inTx needs no lock.
type spyConn struct {
	driver.Conn
	h    Hooks
	inTx bool
}

func (h Hooks) statement(query string) {
	if h.Statement != nil {
		h.Statement(query)
	}
}

// busy tells h that the connection is busy with what, and returns the
// call that tells it is idle again.
func (h Hooks) busy(what string) func() {
	if h.Busy != nil {
		h.Busy(what)
	}
	if h.Idle == nil {
		return func() {}
	}
	return h.Idle
}

func (c *spyConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	e, ok := c.Conn.(driver.ExecerContext)
	if !ok {
		return nil, driver.ErrSkip // database/sql prepares it
	}
	c.h.statement(query)
	if !c.inTx {
		defer c.h.busy(query)()
	}
	return e.ExecContext(ctx, query, args)
}

func (c *spyConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	q, ok := c.Conn.(driver.QueryerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	c.h.statement(query)
	if c.inTx {
		return q.QueryContext(ctx, query, args)
	}
	idle := c.h.busy(query)
	rows, err := q.QueryContext(ctx, query, args)
	if err != nil {
		idle()
		return nil, err
	}
	return &spyRows{Rows: rows, idle: sync.OnceFunc(idle)}, nil
}

func (c *spyConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	c.h.statement(query)
	if p, ok := c.Conn.(driver.ConnPrepareContext); ok {
		return p.PrepareContext(ctx, query)
	}
	return c.Prepare(query)
}

func (c *spyConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	b, ok := c.Conn.(driver.ConnBeginTx)
	if !ok {
		return nil, errors.New("sqlspy: the wrapped driver's connection has no BeginTx")
	}
	idle := c.h.busy("BEGIN")
	t, err := b.BeginTx(ctx, opts)
	if err != nil {
		idle()
		return nil, err
	}
	c.inTx = true
	return spyTx{Tx: t, end: func() {
		c.inTx = false
		idle()
	}}, nil
}

func (c *spyConn) Ping(ctx context.Context) error {
	p, ok := c.Conn.(driver.Pinger)
	if !ok {
		return nil
	}
	defer c.h.busy("ping")()
	return p.Ping(ctx)
}

func (c *spyConn) ResetSession(ctx context.Context) error {
	if r, ok := c.Conn.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c *spyConn) IsValid() bool {
	if v, ok := c.Conn.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

// CheckNamedValue lets the wrapped driver convert its own argument
// types, as it does unwrapped.
func (c *spyConn) CheckNamedValue(v *driver.NamedValue) error {
	if n, ok := c.Conn.(driver.NamedValueChecker); ok {
		return n.CheckNamedValue(v)
	}
	return driver.ErrSkip
}

type spyTx struct {
	driver.Tx
	end func()
}

func (t spyTx) Commit() error {
	defer t.end()
	return t.Tx.Commit()
}

func (t spyTx) Rollback() error {
	defer t.end()
	return t.Tx.Rollback()
}

type spyRows struct {
	driver.Rows
	idle func()
}

func (r *spyRows) Close() error {
	defer r.idle()
	return r.Rows.Close()
}
