package admin

import (
	"context"
	"fmt"

	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
)

// StoredVersion is how many messages of one event name and version one
// of the outbox's tables holds.
type StoredVersion struct {
	// Table is the role of the table that holds them: "outbox" (the
	// backlog, durable deliveries included), "scheduled", "dead" (the
	// relay's dead letters) or "inbound_dead" (the subscriptions').
	Table string `json:"table"`
	// Name is their event name on the wire ("" for messages without one).
	Name string `json:"name"`
	// Version is their version on the wire: 1 for messages written before
	// versions existed, 0 for a version that is not a decimal integer.
	Version int `json:"version"`
	// Rows is how many.
	Rows int64 `json:"rows"`
}

// Versions lists the event names and versions the outbox's tables hold,
// by table, name and version: from the indexed columns the schema
// computes from each row's metadata, never from the payloads. Discarded
// dead letters and released inbound ones are left out: nothing reads
// them again. An Admin for one tenant counts that tenant's.
func (a *Admin) Versions(ctx context.Context) ([]StoredVersion, error) {
	var out []StoredVersion
	for _, src := range []struct{ role, table, where string }{
		{"outbox", a.t.Outbox, ""},
		{"scheduled", a.t.Scheduled, ""},
		{"dead", a.t.DeadLetters, " WHERE discarded_ns = 0"},
		{"inbound_dead", a.t.InboundDead, " WHERE discarded_ns = 0 AND released_ns = 0"},
	} {
		where, args := a.scope(src.where)
		rows, err := a.db.QueryContext(ctx, a.d.Rebind("SELECT msg_name, msg_version, COUNT(*) FROM "+schema.Quote(a.d, src.table)+where+
			" GROUP BY msg_name, msg_version ORDER BY msg_name, msg_version"), args...)
		if err != nil {
			return nil, fmt.Errorf("fxoutbox: Versions of %s: %w", src.table, err)
		}
		for rows.Next() {
			v := StoredVersion{Table: src.role}
			if err := rows.Scan(&v.Name, &v.Version, &v.Rows); err != nil {
				_ = rows.Close()
				return nil, fmt.Errorf("fxoutbox: Versions of %s: %w", src.table, err)
			}
			out = append(out, v)
		}
		if err := rows.Close(); err != nil {
			return nil, err
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("fxoutbox: Versions of %s: %w", src.table, err)
		}
	}
	return out, nil
}
