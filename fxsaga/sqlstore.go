package fxsaga

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/internal/sqlschema"
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
	correlated, overdue, waiting, counts, byKey, active           string
}

// columns are what a State is read from, in scan's order.
const columns = "id, name, status, step, context, version, error, awaiting, correlation, deadline_ns, timer, timed_out, shape, business_key, created_ns, context_version, tenant"

// NewSQL returns the store of db, whose dialect is d, in the tables t
// (Tables{}: the defaults). lease is how long this replica owns a saga it
// drives before another replica may claim it, renewed by every save; 0
// means the default, 30s. Under fx, SQLStore makes it from the outbox's
// configuration.
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
		create: "INSERT INTO " + s + " (id, name, status, step, context, version, error, owner, lease_until_ns, awaiting, correlation, deadline_ns, timer, timed_out, shape, business_key, active_key, created_ns, context_version, tenant)" +
			" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		save: "UPDATE " + s + " SET status = ?, step = ?, context = ?, version = ?, error = ?, owner = ?, lease_until_ns = ?," +
			" awaiting = ?, correlation = ?, deadline_ns = ?, timer = ?, timed_out = ?, active_key = ?, context_version = ? WHERE id = ? AND version = ?",
		load:       "SELECT " + columns + " FROM " + s + " WHERE id = ?",
		unfinished: "SELECT " + columns + " FROM " + s + " WHERE name = ? AND status IN ('RUNNING', 'COMPENSATING', 'WAITING') ORDER BY id",
		failed:     "SELECT " + columns + " FROM " + s + " WHERE status IN ('FAILED', 'SET_ASIDE') ORDER BY id",
		claimable:  "SELECT " + columns + " FROM " + s + " WHERE name = ? AND status IN ('RUNNING', 'COMPENSATING') AND lease_until_ns < ? ORDER BY id LIMIT ?",
		claim:      "UPDATE " + s + " SET owner = ?, lease_until_ns = ?, version = version + 1 WHERE id = ? AND version = ?",
		log:        "INSERT INTO " + l + " (saga_id, step, action, error) VALUES (?, ?, ?, ?)",
		correlated: "SELECT " + columns + " FROM " + s + " WHERE awaiting = ? AND correlation = ? AND tenant = ? AND status = 'WAITING' ORDER BY id",
		overdue:    "SELECT " + columns + " FROM " + s + " WHERE name = ? AND status = 'WAITING' AND deadline_ns < ? ORDER BY deadline_ns, id LIMIT ?",
		waiting:    "SELECT " + columns + " FROM " + s + " WHERE name = ? AND status = 'WAITING' ORDER BY deadline_ns, id LIMIT ?",
		counts:     "SELECT name, status, COUNT(*) FROM " + s + " GROUP BY name, status ORDER BY name, status",
		byKey:      "SELECT " + columns + " FROM " + s + " WHERE (name = ? OR ? = '') AND business_key = ? ORDER BY id",
		active:     "SELECT " + columns + " FROM " + s + " WHERE name = ? AND tenant = ? AND active_key = ?",
	}
	for _, q := range []*string{&st.create, &st.save, &st.load, &st.unfinished, &st.failed, &st.claimable, &st.claim, &st.log, &st.correlated, &st.overdue, &st.waiting, &st.counts, &st.byKey, &st.active} {
		*q = d.Rebind(*q)
	}
	return st, nil
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// conn is ctx's unit of work's transaction, or the pool. Every method of
// the store reads and writes in it: in a tenant's transaction
// (fxoutbox.Outbox.InTenant), the tenant's store.
func (s *SQL) conn(ctx context.Context) execer {
	if tx := fxoutbox.Tx(ctx); tx != nil {
		return tx
	}
	return s.db
}

func (s *SQL) until() int64 { return s.now().Add(s.lease).UnixNano() }

// Create stores a new saga, owned by this replica. A saga whose business
// key an unfinished one of its definition and its tenant holds is refused
// by the key's unique index: the error is then an *AlreadyStarted naming
// that one.
func (s *SQL) Create(ctx context.Context, st State) error {
	_, err := s.conn(ctx).ExecContext(ctx, s.create, st.ID, st.Name, string(st.Status), st.Step, string(st.Context), st.Version, st.Error, s.owner, s.leaseOf(st),
		st.Awaiting, st.Key, deadlineNs(st.Deadline), st.Timer, joinSteps(st.TimedOut), string(st.Shape), st.BusinessKey, activeKey(st), s.now().UnixNano(), max(st.ContextVersion, 1), st.Tenant)
	if err != nil && st.holdsKey() {
		// The drivers word a unique violation each their own way: whether
		// the key is held is what the table says.
		if held, qerr := s.query(ctx, s.active, st.Name, st.Tenant, st.BusinessKey); qerr == nil && len(held) > 0 {
			return &AlreadyStarted{Saga: st.Name, Key: st.BusinessKey, SagaID: held[0].ID}
		}
	}
	return err
}

// activeKey is the active_key column of st: its business key while it
// holds it, else NULL, which the unique index lets many rows have.
func activeKey(st State) any {
	if !st.holdsKey() {
		return nil
	}
	return st.BusinessKey
}

// ByKey returns the sagas of name ("": every name) with business key
// key, the unfinished first, then by id.
func (s *SQL) ByKey(ctx context.Context, name, key string) ([]State, error) {
	if key == "" {
		return nil, nil
	}
	states, err := s.query(ctx, s.byKey, name, name, key)
	sortByKey(states)
	return states, err
}

// leaseOf is the lease a save of st takes: none for a waiting saga, which
// no one drives.
func (s *SQL) leaseOf(st State) int64 {
	if st.Status == Waiting {
		return 0
	}
	return s.until()
}

// Save stores st if the stored version is st.Version-1, renewing this
// replica's lease.
func (s *SQL) Save(ctx context.Context, st State) error {
	res, err := s.conn(ctx).ExecContext(ctx, s.save, string(st.Status), st.Step, string(st.Context), st.Version, st.Error, s.owner, s.leaseOf(st),
		st.Awaiting, st.Key, deadlineNs(st.Deadline), st.Timer, joinSteps(st.TimedOut), activeKey(st), max(st.ContextVersion, 1), st.ID, st.Version-1)
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

// Claim takes over at most limit of the Running and Compensating sagas of
// name whose owner's lease expired (or that no one owns), bumping their
// version so that the old owner can no longer save them.
func (s *SQL) Claim(ctx context.Context, name string, limit int) ([]State, error) {
	return s.claimExcept(ctx, name, limit, nil)
}

// claimExcept is Claim, leaving alone (unclaimed, its version as it is)
// each saga except reports: one the runner drives now, whose lease ran
// out under a slow step. Claiming it would fence the runner's own next
// save.
func (s *SQL) claimExcept(ctx context.Context, name string, limit int, except func(id string) bool) ([]State, error) {
	states, err := s.query(ctx, s.claimable, name, s.now().UnixNano(), limit)
	if err != nil {
		return nil, err
	}
	var claimed []State
	for _, st := range states {
		if except != nil && except(st.ID) {
			continue
		}
		res, err := s.conn(ctx).ExecContext(ctx, s.claim, s.owner, s.until(), st.ID, st.Version)
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

// Correlated returns the sagas of tenant waiting for the event named
// event with key: one lookup in the index on (awaiting, correlation,
// tenant).
func (s *SQL) Correlated(ctx context.Context, tenant, event, key string) ([]State, error) {
	return s.query(ctx, s.correlated, event, key, tenant)
}

// Overdue returns at most limit of the sagas of name waiting past their
// deadline at now, the earliest first.
func (s *SQL) Overdue(ctx context.Context, name string, now time.Time, limit int) ([]State, error) {
	return s.query(ctx, s.overdue, name, now.UnixNano(), limit)
}

// Waiting returns at most limit of the waiting sagas of name, the
// earliest deadline first: what each waits for and until when.
func (s *SQL) Waiting(ctx context.Context, name string, limit int) ([]State, error) {
	return s.query(ctx, s.waiting, name, limit)
}

// Counts returns how many sagas of each name are in each status: one
// aggregate over the (name, status) index, which grows with the sagas
// kept (finished ones included), for a metric collected every few
// seconds.
func (s *SQL) Counts(ctx context.Context) ([]Count, error) {
	rows, err := s.conn(ctx).QueryContext(ctx, s.counts)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Count
	for rows.Next() {
		var c Count
		var status string
		if err := rows.Scan(&c.Name, &status, &c.N); err != nil {
			return nil, err
		}
		c.Status = Status(status)
		out = append(out, c)
	}
	return out, rows.Err()
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
		var status, context, timedOut, shape string
		var deadline, created int64
		if err := rows.Scan(&st.ID, &st.Name, &status, &st.Step, &context, &st.Version, &st.Error,
			&st.Awaiting, &st.Key, &deadline, &st.Timer, &timedOut, &shape, &st.BusinessKey, &created, &st.ContextVersion, &st.Tenant); err != nil {
			return nil, err
		}
		if created != 0 {
			st.Created = time.Unix(0, created)
		}
		if shape != "" {
			st.Shape = json.RawMessage(shape)
		}
		st.Status, st.Context = Status(status), []byte(context)
		if deadline != 0 {
			st.Deadline = time.Unix(0, deadline)
		}
		if st.TimedOut, err = splitSteps(timedOut); err != nil {
			return nil, fmt.Errorf("fxsaga: saga %s: timed_out %q: %w", st.ID, timedOut, err)
		}
		out = append(out, st)
	}
	return out, rows.Err()
}

func deadlineNs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// joinSteps and splitSteps keep State.TimedOut as "2,5".
func joinSteps(steps []int) string {
	parts := make([]string, len(steps))
	for i, s := range steps {
		parts[i] = strconv.Itoa(s)
	}
	return strings.Join(parts, ",")
}

func splitSteps(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	var out []int
	for _, p := range strings.Split(s, ",") {
		n, err := strconv.Atoi(p)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}
