package fxoutbox_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"io"
	"sync/atomic"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
)

// BenchmarkGoCostPerCommand: the Go work of one command, on a database
// driver that does nothing (every statement succeeds at once, a query
// finds no rows): "plain", the plain transaction of
// BenchmarkUnitOfWorkUnderLoad's plain2 (the order and an outbox-shaped
// row), against "outbox", the command through the unit of work, its
// event routed and written to the outbox, the relay told (not started:
// the outbox's Start checks a schema this driver has not). What is left is the library's CPU and
// allocations per command, which the database's time hides elsewhere.
func BenchmarkGoCostPerCommand(b *testing.B) {
	db := sql.OpenDB(noopConnector{})
	b.Cleanup(func() { _ = db.Close() })
	db.SetMaxIdleConns(4)
	ctx := context.Background()
	insertOrder := fxoutbox.PostgreSQL.Rebind("INSERT INTO orders (id) VALUES (?)")
	insertRow := fxoutbox.PostgreSQL.Rebind("INSERT INTO plain2_outbox (topic, message_id, payload, metadata) VALUES (?, ?, ?, ?)")
	meta := plainMetadata(b)
	var ids atomic.Int64
	b.Run("plain", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			id := ids.Add(1)
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := tx.ExecContext(ctx, insertOrder, id); err != nil {
				b.Fatal(err)
			}
			if _, err := tx.ExecContext(ctx, insertRow, "plain2", fmt.Sprintf("%036d", id), []byte(`{"ID":1}`), meta); err != nil {
				b.Fatal(err)
			}
			if err := tx.Commit(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("outbox", func(b *testing.B) {
		m := outboxMediator(b, db, fxoutbox.PostgreSQL, insertOrder)
		b.ReportAllocs()
		for b.Loop() {
			if err := fxcqrs.Exec(ctx, m, PlaceOrder{ID: int(ids.Add(1))}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// noopConnector opens connections on which every statement succeeds and
// every query finds nothing.
type noopConnector struct{}

func (noopConnector) Connect(context.Context) (driver.Conn, error) { return noopConn{}, nil }
func (noopConnector) Driver() driver.Driver                        { return noopDriver{} }

type noopDriver struct{}

func (noopDriver) Open(string) (driver.Conn, error) { return noopConn{}, nil }

type noopConn struct{}

func (noopConn) Prepare(string) (driver.Stmt, error) { return noopStmt{}, nil }
func (noopConn) Close() error                        { return nil }
func (noopConn) Begin() (driver.Tx, error)           { return noopTx{}, nil }

func (noopConn) BeginTx(context.Context, driver.TxOptions) (driver.Tx, error) { return noopTx{}, nil }

func (noopConn) ExecContext(context.Context, string, []driver.NamedValue) (driver.Result, error) {
	return driver.RowsAffected(1), nil
}

func (noopConn) QueryContext(context.Context, string, []driver.NamedValue) (driver.Rows, error) {
	return noopRows{}, nil
}

type noopTx struct{}

func (noopTx) Commit() error   { return nil }
func (noopTx) Rollback() error { return nil }

type noopStmt struct{}

func (noopStmt) Close() error                               { return nil }
func (noopStmt) NumInput() int                              { return -1 }
func (noopStmt) Exec([]driver.Value) (driver.Result, error) { return driver.RowsAffected(1), nil }
func (noopStmt) Query([]driver.Value) (driver.Rows, error)  { return noopRows{}, nil }

type noopRows struct{}

func (noopRows) Columns() []string         { return nil }
func (noopRows) Close() error              { return nil }
func (noopRows) Next([]driver.Value) error { return io.EOF }
