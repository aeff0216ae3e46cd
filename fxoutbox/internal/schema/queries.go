package schema

import "fmt"

// Queries is every statement the relay, the unit of work and the read
// API run, built once for a dialect and its tables, with the dialect's
// placeholders.
type Queries struct {
	Insert       string
	Topics       string
	Rows         string
	RowsAfter    string // Rows, after a row id
	RowsBeside   string // Rows, from the lane's start, with the payload only after a row id (see relay's rowsBeside)
	LaneTenants  string // a lane's tenants from one on, up to a count; on MySQL the least and the greatest of them (fair.go)
	NextTenant   string // a lane's next tenant after one
	TenantRows   string // one tenant's part of FairRows, with %d for its alias
	RowsIn       string // with %s for the ids' placeholders; see RowsByID
	FairWhole    bool   // TenantRows reads rows whole (not on MySQL: ids alone)
	DeleteRow    string
	DeleteIn     string // with %s for the ids' placeholders; see DeleteSent
	Dead         string
	RenewLease   string
	TakeLease    string
	DropLeases   string
	InboxInsert  string
	InboxCleanup string
	Retry        string
	Schedule     string
	CancelIDs    string // MySQL: a schedule's rows, by its message id, locked first (skipping those the move holds) so that Cancel deletes by id; "" elsewhere
	Cancel       string // a schedule's rows, by message id; on MySQL one row, by id
	DueIDs       string
	NextDue      string
	Lanes        string // the lanes of a topic that hold rows
	Members      string // how many relays are alive
	DropLease    string
	PromoteIn    string // with %s for the ids' placeholders; see In
	UnscheduleIn string // likewise
	LockIn       string // likewise: the due rows locked for writing before they move ("" on SQLite, which locks the database)
	// The read API's.
	Backlog, Lag, DeadByTopic, InboundDeadByTopic, ScheduledSummary string
	Dialect                                                         Dialect
}

// NewQueries builds the statements of d for the tables t (with their
// defaults filled in).
func NewQueries(d Dialect, t Tables) Queries {
	o, dl, l, in, sc := Quote(d, t.Outbox), Quote(d, t.DeadLetters), Quote(d, t.Leases), Quote(d, t.Inbox), Quote(d, t.Scheduled)
	insertIgnore := map[Dialect]string{
		PostgreSQL: "INSERT INTO %s (%s) VALUES (%s) ON CONFLICT DO NOTHING",
		MySQL:      "INSERT IGNORE INTO %s (%s) VALUES (%s)",
		SQLite:     "INSERT OR IGNORE INTO %s (%s) VALUES (%s)",
	}[d]
	q := Queries{
		Insert: "INSERT INTO " + o + " (topic, lane, message_id, payload, metadata, created_ns) VALUES (?, ?, ?, ?, ?, ?)",
		// Each lane of a topic by an index lookup from the previous one.
		Lanes: "WITH RECURSIVE l (lane) AS (SELECT MIN(lane) FROM " + o + " WHERE topic = ?" +
			" UNION ALL SELECT (SELECT MIN(n.lane) FROM " + o + " n WHERE n.topic = ? AND n.lane > l.lane) FROM l WHERE l.lane IS NOT NULL)" +
			" SELECT lane FROM l WHERE lane IS NOT NULL",
		Members:   "SELECT COUNT(*) FROM " + l + " WHERE topic LIKE ? AND until_ns >= ?",
		DropLease: "DELETE FROM " + l + " WHERE topic = ? AND owner = ?",
		// Each topic by an index lookup from the previous one (a loose
		// index scan): its cost grows with the topics, not the rows.
		Topics: "WITH RECURSIVE t (topic) AS (SELECT MIN(topic) FROM " + o +
			" UNION ALL SELECT (SELECT MIN(n.topic) FROM " + o + " n WHERE n.topic > t.topic) FROM t WHERE t.topic IS NOT NULL)" +
			" SELECT topic FROM t WHERE topic IS NOT NULL",
		// due_ns is 0 but for a row of this service's own delivery waiting
		// for its next attempt.
		Rows:      "SELECT id, message_id, payload, metadata, attempts FROM " + o + " WHERE topic = ? AND lane = ? AND due_ns <= ? ORDER BY id LIMIT ?",
		RowsAfter: "SELECT id, message_id, payload, metadata, attempts FROM " + o + " WHERE topic = ? AND lane = ? AND due_ns <= ? AND id > ? ORDER BY id LIMIT ?",
		RowsBeside: "SELECT id, CASE WHEN id > ? THEN message_id ELSE '' END, CASE WHEN id > ? THEN payload END, CASE WHEN id > ? THEN metadata ELSE '' END, attempts FROM " + o +
			" WHERE topic = ? AND lane = ? AND due_ns <= ? ORDER BY id LIMIT ?",
		Retry:    "UPDATE " + o + " SET attempts = attempts + 1, due_ns = ? WHERE id = ?",
		Schedule: "INSERT INTO " + sc + " (due_ns, topic, lane, message_id, payload, metadata) VALUES (?, ?, ?, ?, ?, ?)",
		Cancel:   "DELETE FROM " + sc + " WHERE message_id = ?",
		DueIDs:   "SELECT id FROM " + sc + " WHERE due_ns <= ? ORDER BY due_ns, id LIMIT ?",
		NextDue:  "SELECT MIN(due_ns) FROM " + sc,
		PromoteIn: "INSERT INTO " + o + " (topic, lane, message_id, payload, metadata, created_ns) SELECT topic, lane, message_id, payload, metadata, due_ns FROM " + sc +
			" WHERE id IN (%s) ORDER BY due_ns, id",
		UnscheduleIn: "DELETE FROM " + sc + " WHERE id IN (%s)",
		LockIn:       "SELECT id FROM " + sc + " WHERE id IN (%s) ORDER BY id FOR UPDATE",
		// A due row's wait starts when it was written or, for a retry of
		// this service's own delivery, when it fell due again.
		Backlog: "SELECT topic, COUNT(*), SUM(CASE WHEN due_ns <= ? THEN 1 ELSE 0 END)," +
			" MIN(CASE WHEN due_ns <= ? THEN (CASE WHEN due_ns > created_ns THEN due_ns ELSE created_ns END) END)" +
			" FROM " + o + " GROUP BY topic ORDER BY topic",
		// The first row of each topic, by the loose index scan of topics.
		Lag: "WITH RECURSIVE t (topic) AS (SELECT MIN(topic) FROM " + o +
			" UNION ALL SELECT (SELECT MIN(n.topic) FROM " + o + " n WHERE n.topic > t.topic) FROM t WHERE t.topic IS NOT NULL)" +
			" SELECT MIN((SELECT CASE WHEN f.due_ns > f.created_ns THEN f.due_ns ELSE f.created_ns END FROM " + o +
			" f WHERE f.topic = t.topic AND f.due_ns <= ? ORDER BY f.id LIMIT 1)) FROM t WHERE t.topic IS NOT NULL",
		DeadByTopic:      "SELECT topic, COUNT(*), MAX(failed_ns) FROM " + dl + " WHERE discarded_ns = 0 GROUP BY topic ORDER BY topic",
		ScheduledSummary: "SELECT COUNT(*), MIN(due_ns) FROM " + sc,
		InboundDeadByTopic: "SELECT topic, COUNT(*), MAX(failed_ns) FROM " + Quote(d, t.InboundDead) +
			" WHERE discarded_ns = 0 GROUP BY topic ORDER BY topic",
		DeleteRow:   "DELETE FROM " + o + " WHERE id = ?",
		DeleteIn:    "DELETE FROM " + o + " WHERE id IN (%s) AND EXISTS (SELECT 1 FROM " + l + " WHERE topic = ? AND owner = ? AND until_ns >= ?)",
		Dead:        "INSERT INTO " + dl + " (id, topic, message_id, payload, metadata, error, failed_ns) VALUES (?, ?, ?, ?, ?, ?, ?)",
		RenewLease:  "UPDATE " + l + " SET owner = ?, until_ns = ? WHERE topic = ? AND (owner = ? OR until_ns < ?)",
		TakeLease:   fmt.Sprintf(insertIgnore, l, "topic, owner, until_ns", "?, ?, ?"),
		DropLeases:  "DELETE FROM " + l + " WHERE owner = ?",
		InboxInsert: fmt.Sprintf(insertIgnore, in, "handler, message_id, handled_ns", "?, ?, ?"),
		InboxCleanup: map[Dialect]string{
			PostgreSQL: "DELETE FROM " + in + " WHERE (handler, message_id) IN (SELECT handler, message_id FROM " + in + " WHERE handled_ns < ? LIMIT ?)",
			MySQL:      "DELETE FROM " + in + " WHERE handled_ns < ? LIMIT ?",
			SQLite:     "DELETE FROM " + in + " WHERE rowid IN (SELECT rowid FROM " + in + " WHERE handled_ns < ? LIMIT ?)",
		}[d],
	}
	fairQueries(&q, d, o)
	for _, p := range []*string{
		&q.LaneTenants, &q.NextTenant,
		&q.Insert, &q.Topics, &q.Rows, &q.RowsAfter, &q.RowsBeside, &q.DeleteRow, &q.Dead, &q.RenewLease, &q.TakeLease, &q.DropLeases, &q.InboxInsert, &q.InboxCleanup,
		&q.Retry, &q.Schedule, &q.CancelIDs, &q.Cancel, &q.DueIDs, &q.NextDue, &q.Lanes, &q.Members, &q.DropLease,
		&q.Backlog, &q.Lag, &q.DeadByTopic, &q.InboundDeadByTopic, &q.ScheduledSummary,
	} {
		*p = d.Rebind(*p)
	}
	switch d {
	case SQLite:
		q.LockIn = ""
	case MySQL:
		// InnoDB locks a DELETE by message_id in its index first and the
		// row after, the move of due schedules the row first: the two
		// deadlocked. A cancel on MySQL locks the ids first, then deletes
		// by id; it skips a row the move holds (it is on its way), for a
		// cancel that waited queued its lock between the move's shared
		// lock and the exclusive one the move's DELETE asks for next, and
		// InnoDB broke that deadlock by rolling the cancel back.
		q.CancelIDs = d.Rebind("SELECT id FROM " + sc + " WHERE message_id = ? ORDER BY id FOR UPDATE SKIP LOCKED")
		q.Cancel = d.Rebind("DELETE FROM " + sc + " WHERE id = ?")
	}
	q.Dialect = d
	return q
}

// DeleteSent is the statement that deletes n rows by id, fenced by the
// relay's lease.
func (q Queries) DeleteSent(n int) string { return In(q.Dialect, q.DeleteIn, n) }
