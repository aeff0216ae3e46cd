package main

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	_ "github.com/jackc/pgx/v5/stdlib" // openService's PostgreSQL
	"go.uber.org/fx"
	_ "modernc.org/sqlite" // openService's SQLite, pure Go
)

// What the services run on: a database each (a SQLite file, or
// PostgreSQL) with their tables and their outbox's, and a broker (the
// in-process one, or NATS JetStream).

// service is where one service keeps its data and meets the other: its
// database (and the dialect, and its outbox's tables there) and, when not
// the in-process broker, its broker.
type service struct {
	db     *sql.DB
	sql    SQL
	tables fxoutbox.Tables
	broker fx.Option
}

// SQL writes the services' queries in their database's dialect.
type SQL struct{ Dialect fxoutbox.Dialect }

// Q is query with the dialect's placeholders.
func (s SQL) Q(query string) string { return s.Dialect.Rebind(query) }

// backend says where the services run: pg and natsURL empty for the
// embedded defaults.
type backend struct{ dir, pg, natsURL string }

func (b backend) open(name string, schema []string, tables fxoutbox.Tables, saga bool) (service, func() error, error) {
	svc, err := openService(b.dir, b.pg, name, schema, tables, saga)
	if err != nil {
		return service{}, nil, err
	}
	closers := []func() error{svc.db.Close}
	if b.natsURL != "" {
		opt, closeBroker, err := natsBroker(b.natsURL, name)
		if err != nil {
			return service{}, nil, errors.Join(err, svc.db.Close())
		}
		svc.broker = opt
		closers = append([]func() error{closeBroker}, closers...)
	}
	return svc, func() error {
		var errs []error
		for _, c := range closers {
			errs = append(errs, c())
		}
		return errors.Join(errs...)
	}, nil
}

// snippet:open

// openService opens the service's database (the SQLite file name in dir,
// or PostgreSQL at pg) and creates its tables: its own (schema) and those
// of the modules it runs.
func openService(dir, pg, name string, schema []string, tables fxoutbox.Tables, saga bool) (service, error) {
	driver, dsn, d := "sqlite", "file:"+filepath.Join(dir, name+".db")+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_txlock=immediate", fxoutbox.SQLite
	if pg != "" {
		driver, dsn, d = "pgx", pg, fxoutbox.PostgreSQL
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return service{}, err
	}
	if d == fxoutbox.SQLite {
		db.SetMaxOpenConns(1) // SQLite has one writer (fxoutbox's doc, "SQLite")
	}
	ctx := context.Background()
	for _, q := range schema {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return service{}, errors.Join(err, db.Close())
		}
	}
	if err := fxoutbox.Migrate(ctx, db, d, tables); err != nil {
		return service{}, errors.Join(err, db.Close())
	}
	if saga {
		if err := fxsaga.Migrate(ctx, db, d, fxsaga.Tables{}); err != nil {
			return service{}, errors.Join(err, db.Close())
		}
	}
	return service{db: db, sql: SQL{d}, tables: tables}, nil
}

// end snippet

// natsBroker is the service's JetStream publisher and subscriber, its
// replicas one consumer group.
func natsBroker(url, group string) (fx.Option, func() error, error) {
	ps, err := natsjs.New(natsjs.Config{URL: url, Group: group})
	if err != nil {
		return nil, nil, err
	}
	return fx.Supply(
		fx.Annotate(ps, fx.As(new(message.Publisher))),
		fx.Annotate(ps, fx.As(new(message.Subscriber))),
	), ps.Close, nil
}

// snippet:config

// outboxConfig is each service's: the inbox on (each message handled
// once), the run's clock, a short poll for the other replica's rows.
func (s service) outboxConfig(c Clock) fxoutbox.Config {
	return fxoutbox.Config{
		Dialect: s.sql.Dialect, Tables: s.tables, Inbox: true, Now: c.Now, After: c.After,
		Relay: fxoutbox.RelayConfig{PollInterval: 50 * time.Millisecond},
	}
}

// end snippet

func (s service) options() fx.Option {
	if s.broker == nil {
		return fx.Options() // fxbus's in-process broker
	}
	return s.broker
}

type eventFunc[E any] func(context.Context, E) error

func (f eventFunc[E]) Handle(ctx context.Context, e E) error { return f(ctx, e) }
