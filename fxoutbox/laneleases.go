package fxoutbox

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
)

// LaneLeaseStore returns the leases by which consumer replicas share a
// topic's lanes, on db: for a broker that keeps none of its own
// (amqpbus.Config.Leases, RabbitMQ). It is the table of migration 8
// (the Leases table's name and "_lanes"); each write compares the
// entry's revision, in one statement: an insert where the name is absent,
// an update where the revision is still the one read.
//
// fxoutbox.Module provides it, from its *sql.DB and Config.
func LaneLeaseStore(db *sql.DB, d Dialect, t Tables) (fxbus.LeaseStore, error) {
	if db == nil {
		return nil, fmt.Errorf("fxoutbox: LaneLeaseStore: the *sql.DB is nil")
	}
	if !schema.Known(d) {
		return nil, fmt.Errorf("fxoutbox: LaneLeaseStore: unknown dialect %v", d)
	}
	t = schema.WithDefaults(t)
	if err := schema.Validate(t); err != nil {
		return nil, fmt.Errorf("fxoutbox: LaneLeaseStore: %w", err)
	}
	table := schema.Quote(d, schema.LaneLeases(t))
	insert := map[Dialect]string{
		PostgreSQL: "INSERT INTO %s (name, value, rev) VALUES (?, ?, 1) ON CONFLICT DO NOTHING",
		MySQL:      "INSERT IGNORE INTO %s (name, value, rev) VALUES (?, ?, 1)",
		SQLite:     "INSERT OR IGNORE INTO %s (name, value, rev) VALUES (?, ?, 1)",
	}[d]
	return &laneLeases{
		db:     db,
		list:   d.Rebind("SELECT name, value, rev FROM " + table + " WHERE name LIKE ? ESCAPE '!'"),
		insert: d.Rebind(fmt.Sprintf(insert, table)),
		update: d.Rebind("UPDATE " + table + " SET value = ?, rev = rev + 1 WHERE name = ? AND rev = ?"),
	}, nil
}

// laneLeases is LaneLeaseStore's store.
type laneLeases struct {
	db                   *sql.DB
	list, insert, update string
}

// likeEscaper escapes LIKE's wildcards, and its escape character, '!'.
var likeEscaper = strings.NewReplacer("!", "!!", "%", "!%", "_", "!_")

// List returns every entry whose name starts with prefix.
func (s *laneLeases) List(ctx context.Context, prefix string) (map[string]fxbus.LeaseEntry, error) {
	rows, err := s.db.QueryContext(ctx, s.list, likeEscaper.Replace(prefix)+"%")
	if err != nil {
		return nil, fmt.Errorf("fxoutbox: read the lane leases: %w", err)
	}
	defer rows.Close()
	out := map[string]fxbus.LeaseEntry{}
	for rows.Next() {
		var (
			name, value string
			rev         uint64
		)
		if err := rows.Scan(&name, &value, &rev); err != nil {
			return nil, fmt.Errorf("fxoutbox: read the lane leases: %w", err)
		}
		if strings.HasPrefix(name, prefix) { // a collation that ignores case matches more
			out[name] = fxbus.LeaseEntry{Value: []byte(value), Rev: rev}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("fxoutbox: read the lane leases: %w", err)
	}
	return out, nil
}

// Put writes value under name if its revision is still rev (0: none).
func (s *laneLeases) Put(ctx context.Context, name string, value []byte, rev uint64) (uint64, error) {
	var (
		res sql.Result
		err error
	)
	if rev == 0 {
		res, err = s.db.ExecContext(ctx, s.insert, name, string(value))
	} else {
		res, err = s.db.ExecContext(ctx, s.update, string(value), name, rev)
	}
	if err != nil {
		return 0, fmt.Errorf("fxoutbox: write the lane lease %s: %w", name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("fxoutbox: write the lane lease %s: %w", name, err)
	}
	if n != 1 {
		return 0, fxbus.ErrLeaseConflict
	}
	return rev + 1, nil
}
