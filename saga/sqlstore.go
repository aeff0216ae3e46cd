package fxsaga

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/fxcqrs/fxcqrs/internal/sqlschema"
	fxoutbox "github.com/fxcqrs/fxcqrs/outbox"
	"github.com/google/uuid"
)

// Tables names the saga tables. Each is validated as an SQL identifier
// and quoted.
type Tables struct {
	// Sagas holds each saga's state. Default "fxcqrs_sagas".
	Sagas string `json:"sagas" yaml:"sagas"`
	// Log holds every act and compensation. Default "fxcqrs_saga_log".
	Log string `json:"log" yaml:"log"`
	// Migrations records which of the schema's migrations were applied.
	// Default "fxcqrs_saga_migrations".
	Migrations string `json:"migrations" yaml:"migrations"`
}

func (t Tables) withDefaults() Tables {
	if t.Sagas == "" {
		t.Sagas = "fxcqrs_sagas"
	}
	if t.Log == "" {
		t.Log = "fxcqrs_saga_log"
	}
	if t.Migrations == "" {
		t.Migrations = "fxcqrs_saga_migrations"
	}
	return t
}

func (t Tables) validate() error {
	return sqlschema.CheckRoles("fxsaga", []sqlschema.Role{
		{Role: "Sagas", Name: t.Sagas}, {Role: "Log", Name: t.Log}, {Role: "Migrations", Name: t.Migrations},
	}, sqlschema.Foreign("fxsaga"))
}

func quote(d fxoutbox.Dialect, name string) string { return sqlschema.Quote(d == fxoutbox.MySQL, name) }

// SQL is a Store on a database the outbox module speaks. It writes in the
// unit of work's transaction when there is one (fxoutbox.Tx), so that a
// step's writes, its routed events and the saga's state commit together.
// Each replica that recovers sagas owns the ones it drives under a lease,
// renewed by every save; a saga whose lease expired is claimed by another
// replica, and the version bump of the claim fences the old owner.
type SQL struct {
	db     *sql.DB
	d      fxoutbox.Dialect
	tables Tables
	owner  string
	lease  time.Duration
	now    func() time.Time

	create, save, load, unfinished, failed, claimable, claim, log string
}

// NewSQL returns the store of db, whose dialect is d, with the given lease
// (default 30s).
func NewSQL(db *sql.DB, d fxoutbox.Dialect, t Tables, lease time.Duration) (*SQL, error) {
	t = t.withDefaults()
	if err := t.validate(); err != nil {
		return nil, err
	}
	if lease <= 0 {
		lease = 30 * time.Second
	}
	s, l := quote(d, t.Sagas), quote(d, t.Log)
	st := &SQL{
		db: db, d: d, tables: t, owner: uuid.NewString(), lease: lease, now: time.Now,
		create:     "INSERT INTO " + s + " (id, name, status, step, context, version, error, owner, lease_until_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
		save:       "UPDATE " + s + " SET status = ?, step = ?, context = ?, version = ?, error = ?, owner = ?, lease_until_ns = ? WHERE id = ? AND version = ?",
		load:       "SELECT id, name, status, step, context, version, error FROM " + s + " WHERE id = ?",
		unfinished: "SELECT id, name, status, step, context, version, error FROM " + s + " WHERE name = ? AND status IN ('RUNNING', 'COMPENSATING') ORDER BY id",
		failed:     "SELECT id, name, status, step, context, version, error FROM " + s + " WHERE status IN ('FAILED', 'SET_ASIDE') ORDER BY id",
		claimable:  "SELECT id, name, status, step, context, version, error FROM " + s + " WHERE name = ? AND status IN ('RUNNING', 'COMPENSATING') AND lease_until_ns < ? ORDER BY id",
		claim:      "UPDATE " + s + " SET owner = ?, lease_until_ns = ?, version = version + 1 WHERE id = ? AND version = ?",
		log:        "INSERT INTO " + l + " (saga_id, step, action, error) VALUES (?, ?, ?, ?)",
	}
	for _, q := range []*string{&st.create, &st.save, &st.load, &st.unfinished, &st.failed, &st.claimable, &st.claim, &st.log} {
		*q = d.Rebind(*q)
	}
	return st, nil
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// conn is ctx's unit of work's transaction, or the pool.
func (s *SQL) conn(ctx context.Context) execer {
	if tx := fxoutbox.Tx(ctx); tx != nil {
		return tx
	}
	return s.db
}

func (s *SQL) until() int64 { return s.now().Add(s.lease).UnixNano() }

// Create stores a new saga, owned by this replica.
func (s *SQL) Create(ctx context.Context, st State) error {
	_, err := s.conn(ctx).ExecContext(ctx, s.create, st.ID, st.Name, string(st.Status), st.Step, string(st.Context), st.Version, st.Error, s.owner, s.until())
	return err
}

// Save stores st if the stored version is st.Version-1, renewing this
// replica's lease.
func (s *SQL) Save(ctx context.Context, st State) error {
	res, err := s.conn(ctx).ExecContext(ctx, s.save, string(st.Status), st.Step, string(st.Context), st.Version, st.Error, s.owner, s.until(), st.ID, st.Version-1)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return errors.Join(ErrFenced, err)
	}
	return nil
}

// Load returns a saga's state.
func (s *SQL) Load(ctx context.Context, id string) (State, error) {
	states, err := s.query(ctx, s.load, id)
	if err != nil {
		return State{}, err
	}
	if len(states) == 0 {
		return State{}, fmt.Errorf("fxsaga: no saga %s", id)
	}
	return states[0], nil
}

// Unfinished returns the sagas of name that are not final.
func (s *SQL) Unfinished(ctx context.Context, name string) ([]State, error) {
	return s.query(ctx, s.unfinished, name)
}

// Failed lists the sagas left Failed, of every name: a compensation kept
// failing, and a person must look (each has its Error). Alert on it.
func (s *SQL) Failed(ctx context.Context) ([]State, error) {
	return s.query(ctx, s.failed)
}

// Claim takes over the unfinished sagas of name whose owner's lease
// expired (or that no one owns), bumping their version so that the old
// owner can no longer save them.
func (s *SQL) Claim(ctx context.Context, name string) ([]State, error) {
	states, err := s.query(ctx, s.claimable, name, s.now().UnixNano())
	if err != nil {
		return nil, err
	}
	var claimed []State
	for _, st := range states {
		res, err := s.db.ExecContext(ctx, s.claim, s.owner, s.until(), st.ID, st.Version)
		if err != nil {
			return claimed, err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			st.Version++
			claimed = append(claimed, st)
		}
	}
	return claimed, nil
}

// Log appends an entry, in ctx's unit of work's transaction if it has one.
func (s *SQL) Log(ctx context.Context, e Entry) error {
	_, err := s.conn(ctx).ExecContext(ctx, s.log, e.SagaID, e.Step, e.Action, e.Err)
	return err
}

func (s *SQL) query(ctx context.Context, q string, args ...any) ([]State, error) {
	rows, err := s.conn(ctx).QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []State
	for rows.Next() {
		var st State
		var status, context string
		if err := rows.Scan(&st.ID, &st.Name, &status, &st.Step, &context, &st.Version, &st.Error); err != nil {
			return nil, err
		}
		st.Status, st.Context = Status(status), []byte(context)
		out = append(out, st)
	}
	return out, rows.Err()
}
