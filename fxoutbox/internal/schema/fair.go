package schema

import (
	"fmt"
	"strings"
)

// The statements of the relay's fair shares between a lane's tenants
// (relay's fair.go). Each tenant's rows of a lane are found by the index
// (topic, lane, msg_tenant, id) of migration 0008: the tenants by a loose
// index scan, one lookup each, and each tenant's first rows by a range of
// it, so that a noisy tenant's 20,000 rows cost a batch no more than the
// rows it reads of them.

// fairQueries fills in q's statements for the fair shares on the outbox
// table o, not yet rebound.
func fairQueries(q *Queries, d Dialect, o string) {
	// The lane's tenants from one on, in order, up to a count: a loose
	// index scan, one lookup per tenant. MariaDB walks a correlated
	// lookup's whole (topic, lane) range instead (a noisy tenant's every
	// row, per tenant): there the least and the greatest tenant come first,
	// which settle the common case, one tenant, and the others come one
	// statement each (NextTenant).
	q.NextTenant = "SELECT msg_tenant FROM " + o + " WHERE topic = ? AND lane = ? AND msg_tenant > ? ORDER BY msg_tenant LIMIT 1"
	q.LaneTenants = "WITH RECURSIVE tn (t, n) AS (SELECT (SELECT f.msg_tenant FROM " + o + " f WHERE f.topic = ? AND f.lane = ? AND f.msg_tenant >= ? ORDER BY f.msg_tenant LIMIT 1), 1" +
		" UNION ALL SELECT (SELECT x.msg_tenant FROM " + o + " x WHERE x.topic = ? AND x.lane = ? AND x.msg_tenant > tn.t ORDER BY x.msg_tenant LIMIT 1), n + 1 FROM tn WHERE tn.t IS NOT NULL AND n < ?)" +
		" SELECT t FROM tn WHERE t IS NOT NULL"
	if d == MySQL {
		q.LaneTenants = "SELECT MIN(msg_tenant), MAX(msg_tenant) FROM " + o + " WHERE topic = ? AND lane = ? AND msg_tenant >= ?"
	}
	// A tenant's first due rows, whole after an id (the last this relay
	// read of it), only their ids up to it: those are mostly published
	// and not yet deleted (see relay's rowsBeside).
	q.TenantRows = "SELECT id, msg_tenant, CASE WHEN id > ? THEN message_id ELSE '' END, CASE WHEN id > ? THEN payload END, CASE WHEN id > ? THEN metadata ELSE '' END, attempts FROM (" +
		"SELECT id, msg_tenant, message_id, payload, metadata, attempts FROM " + o + " WHERE topic = ? AND lane = ? AND msg_tenant = ? AND due_ns <= ? ORDER BY id LIMIT ?) t%d"
	q.FairWhole = d != MySQL
	if d == MySQL {
		// MariaDB writes a derived table that holds a BLOB to disk: the
		// ids alone, the batch's rows read after by id (RowsByID).
		q.TenantRows = "SELECT id, msg_tenant, '', NULL, '', attempts FROM (" +
			"SELECT id, msg_tenant, attempts FROM " + o + " WHERE topic = ? AND lane = ? AND msg_tenant = ? AND due_ns <= ? ORDER BY id LIMIT ?) t%d"
	}
	q.RowsIn = "SELECT id, message_id, payload, metadata, attempts FROM " + o + " WHERE id IN (%s) ORDER BY id"
}

// FairRows is the statement that reads the first due rows of n tenants
// of a lane, up to a count each, with their tenants, whole after an id
// each (when FairWhole; else ids only): its arguments are, per tenant,
// that id thrice (when FairWhole), the topic, the lane, the tenant, the
// time and the count.
func (q Queries) FairRows(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(q.TenantRows, i)
	}
	return q.Dialect.Rebind(strings.Join(parts, " UNION ALL "))
}

// RowsByID is the statement that reads n rows by id, in id order: the
// rows a fair share chose.
func (q Queries) RowsByID(n int) string { return In(q.Dialect, q.RowsIn, n) }
