package fxoutbox

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/fxcqrs/fxcqrs/internal/sqlschema"
)

// Dialect is the SQL database the outbox lives in.
type Dialect uint8

const (
	// PostgreSQL 13 or later, through pgx's database/sql driver ("pgx").
	PostgreSQL Dialect = iota + 1
	// MySQL 8.0 or later, or MariaDB 10.6 or later
	// (github.com/go-sql-driver/mysql, with parseTime=true).
	MySQL
	// SQLite 3.35 or later, such as modernc.org/sqlite: one process only
	// (see the package documentation).
	SQLite
)

// String names the dialect.
func (d Dialect) String() string {
	switch d {
	case PostgreSQL:
		return "postgresql"
	case MySQL:
		return "mysql"
	case SQLite:
		return "sqlite"
	}
	return "Dialect(" + strconv.Itoa(int(d)) + ")"
}

// Tables names the outbox's tables. Each is validated as an SQL
// identifier and quoted; none is interpolated unchecked.
type Tables struct {
	// Outbox holds the routed events waiting to be relayed. Default
	// "fxcqrs_outbox".
	Outbox string `json:"outbox" yaml:"outbox"`
	// DeadLetters holds the rows the relay could not deliver. Default
	// "fxcqrs_outbox_dead".
	DeadLetters string `json:"deadLetters" yaml:"deadLetters"`
	// Leases holds which relay owns which topic. Default
	// "fxcqrs_outbox_leases".
	Leases string `json:"leases" yaml:"leases"`
	// Inbox holds the messages each handler has handled. Default
	// "fxcqrs_inbox".
	Inbox string `json:"inbox" yaml:"inbox"`
	// Scheduled holds the scheduled messages until they are due. Default
	// "fxcqrs_outbox_scheduled".
	Scheduled string `json:"scheduled" yaml:"scheduled"`
	// Repairs records every repairing action of the repair tools (a
	// replay, a discard), with who asked and why. Default: Outbox's name
	// and "_repairs" ("fxcqrs_outbox_repairs"), so that two outboxes in
	// one database that name their other tables apart need not name it.
	Repairs string `json:"repairs" yaml:"repairs"`
	// InboundDead records the messages inbound subscriptions
	// dead-lettered, beside their dead letter topic, for the repair
	// tools. Default: Outbox's name and "_inbound_dead".
	InboundDead string `json:"inboundDead" yaml:"inboundDead"`
	// Migrations records which of the schema's migrations were applied.
	// Default "fxcqrs_outbox_migrations".
	Migrations string `json:"migrations" yaml:"migrations"`
}

func (t Tables) withDefaults() Tables {
	if t.Outbox == "" {
		t.Outbox = "fxcqrs_outbox"
	}
	if t.DeadLetters == "" {
		t.DeadLetters = "fxcqrs_outbox_dead"
	}
	if t.Leases == "" {
		t.Leases = "fxcqrs_outbox_leases"
	}
	if t.Inbox == "" {
		t.Inbox = "fxcqrs_inbox"
	}
	if t.Scheduled == "" {
		t.Scheduled = "fxcqrs_outbox_scheduled"
	}
	if t.InboundDead == "" {
		t.InboundDead = sqlschema.IndexName(t.Outbox, "inbound_dead")
	}
	if t.Repairs == "" {
		t.Repairs = sqlschema.IndexName(t.Outbox, "repairs") // shortened, with a hash, past 63 characters
	}
	if t.Migrations == "" {
		t.Migrations = "fxcqrs_outbox_migrations"
	}
	return t
}

func (t Tables) validate() error {
	return sqlschema.CheckRoles("fxoutbox", []sqlschema.Role{
		{Role: "Outbox", Name: t.Outbox},
		{Role: "DeadLetters", Name: t.DeadLetters},
		{Role: "Leases", Name: t.Leases},
		{Role: "Inbox", Name: t.Inbox},
		{Role: "Scheduled", Name: t.Scheduled},
		{Role: "Repairs", Name: t.Repairs},
		{Role: "InboundDead", Name: t.InboundDead},
		{Role: "Migrations", Name: t.Migrations},
	}, sqlschema.Foreign("fxoutbox"))
}

// flavor is d as the shared migration machinery knows it.
func (d Dialect) flavor() sqlschema.Flavor {
	return map[Dialect]sqlschema.Flavor{PostgreSQL: sqlschema.PostgreSQL, MySQL: sqlschema.MySQL, SQLite: sqlschema.SQLite}[d]
}

// quote quotes a validated identifier for d.
func (d Dialect) quote(name string) string { return sqlschema.Quote(d == MySQL, name) }

// Rebind turns a query's ? placeholders into the dialect's own ($1, $2 for
// PostgreSQL), for repositories that write in Tx.
func (d Dialect) Rebind(query string) string {
	if d != PostgreSQL {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// queries is every statement the outbox runs, built once for a dialect and
// its tables.
type queries struct {
	insert       string
	topics       string
	rows         string
	rowsAfter    string // rows, after a row id
	deleteRow    string
	deleteIn     string // with %s for the ids' placeholders; see deleteSent
	dead         string
	renewLease   string
	takeLease    string
	dropLeases   string
	inboxInsert  string
	inboxCleanup string
	retry        string
	schedule     string
	cancel       string
	dueIDs       string
	nextDue      string
	lanes        string // the lanes of a topic that hold rows
	members      string // how many relays are alive
	dropLease    string
	promoteIn    string // with %s for the ids' placeholders
	unscheduleIn string // likewise
	// The read API's (inspect.go).
	backlog, lag, deadByTopic, inboundDeadByTopic, scheduledSummary string
	dialect                                                         Dialect
}

func (d Dialect) queries(t Tables) queries {
	o, dl, l, in, sc := d.quote(t.Outbox), d.quote(t.DeadLetters), d.quote(t.Leases), d.quote(t.Inbox), d.quote(t.Scheduled)
	insertIgnore := map[Dialect]string{
		PostgreSQL: "INSERT INTO %s (%s) VALUES (%s) ON CONFLICT DO NOTHING",
		MySQL:      "INSERT IGNORE INTO %s (%s) VALUES (%s)",
		SQLite:     "INSERT OR IGNORE INTO %s (%s) VALUES (%s)",
	}[d]
	q := queries{
		insert: "INSERT INTO " + o + " (topic, lane, message_id, payload, metadata, created_ns) VALUES (?, ?, ?, ?, ?, ?)",
		// Each lane of a topic by an index lookup from the previous one.
		lanes: "WITH RECURSIVE l (lane) AS (SELECT MIN(lane) FROM " + o + " WHERE topic = ?" +
			" UNION ALL SELECT (SELECT MIN(n.lane) FROM " + o + " n WHERE n.topic = ? AND n.lane > l.lane) FROM l WHERE l.lane IS NOT NULL)" +
			" SELECT lane FROM l WHERE lane IS NOT NULL",
		members:   "SELECT COUNT(*) FROM " + l + " WHERE topic LIKE ? AND until_ns >= ?",
		dropLease: "DELETE FROM " + l + " WHERE topic = ? AND owner = ?",
		// Each topic by an index lookup from the previous one (a loose
		// index scan): its cost grows with the topics, not the rows.
		topics: "WITH RECURSIVE t (topic) AS (SELECT MIN(topic) FROM " + o +
			" UNION ALL SELECT (SELECT MIN(n.topic) FROM " + o + " n WHERE n.topic > t.topic) FROM t WHERE t.topic IS NOT NULL)" +
			" SELECT topic FROM t WHERE topic IS NOT NULL",
		// due_ns is 0 but for a row of this service's own delivery waiting
		// for its next attempt.
		rows:      "SELECT id, message_id, payload, metadata, attempts FROM " + o + " WHERE topic = ? AND lane = ? AND due_ns <= ? ORDER BY id LIMIT ?",
		rowsAfter: "SELECT id, message_id, payload, metadata, attempts FROM " + o + " WHERE topic = ? AND lane = ? AND due_ns <= ? AND id > ? ORDER BY id LIMIT ?",
		retry:     "UPDATE " + o + " SET attempts = attempts + 1, due_ns = ? WHERE id = ?",
		schedule:  "INSERT INTO " + sc + " (due_ns, topic, lane, message_id, payload, metadata) VALUES (?, ?, ?, ?, ?, ?)",
		cancel:    "DELETE FROM " + sc + " WHERE message_id = ?",
		dueIDs:    "SELECT id FROM " + sc + " WHERE due_ns <= ? ORDER BY due_ns, id LIMIT ?",
		nextDue:   "SELECT MIN(due_ns) FROM " + sc,
		promoteIn: "INSERT INTO " + o + " (topic, lane, message_id, payload, metadata, created_ns) SELECT topic, lane, message_id, payload, metadata, due_ns FROM " + sc +
			" WHERE id IN (%s) ORDER BY due_ns, id",
		unscheduleIn: "DELETE FROM " + sc + " WHERE id IN (%s)",
		// A due row's wait starts when it was written or, for a retry of
		// this service's own delivery, when it fell due again.
		backlog: "SELECT topic, COUNT(*), SUM(CASE WHEN due_ns <= ? THEN 1 ELSE 0 END)," +
			" MIN(CASE WHEN due_ns <= ? THEN (CASE WHEN due_ns > created_ns THEN due_ns ELSE created_ns END) END)" +
			" FROM " + o + " GROUP BY topic ORDER BY topic",
		// The first row of each topic, by the loose index scan of topics.
		lag: "WITH RECURSIVE t (topic) AS (SELECT MIN(topic) FROM " + o +
			" UNION ALL SELECT (SELECT MIN(n.topic) FROM " + o + " n WHERE n.topic > t.topic) FROM t WHERE t.topic IS NOT NULL)" +
			" SELECT MIN((SELECT CASE WHEN f.due_ns > f.created_ns THEN f.due_ns ELSE f.created_ns END FROM " + o +
			" f WHERE f.topic = t.topic AND f.due_ns <= ? ORDER BY f.id LIMIT 1)) FROM t WHERE t.topic IS NOT NULL",
		deadByTopic:      "SELECT topic, COUNT(*), MAX(failed_ns) FROM " + dl + " WHERE discarded_ns = 0 GROUP BY topic ORDER BY topic",
		scheduledSummary: "SELECT COUNT(*), MIN(due_ns) FROM " + sc,
		inboundDeadByTopic: "SELECT topic, COUNT(*), MAX(failed_ns) FROM " + d.quote(t.InboundDead) +
			" WHERE discarded_ns = 0 GROUP BY topic ORDER BY topic",
		deleteRow:   "DELETE FROM " + o + " WHERE id = ?",
		deleteIn:    "DELETE FROM " + o + " WHERE id IN (%s) AND EXISTS (SELECT 1 FROM " + l + " WHERE topic = ? AND owner = ? AND until_ns >= ?)",
		dead:        "INSERT INTO " + dl + " (id, topic, message_id, payload, metadata, error, failed_ns) VALUES (?, ?, ?, ?, ?, ?, ?)",
		renewLease:  "UPDATE " + l + " SET owner = ?, until_ns = ? WHERE topic = ? AND (owner = ? OR until_ns < ?)",
		takeLease:   fmt.Sprintf(insertIgnore, l, "topic, owner, until_ns", "?, ?, ?"),
		dropLeases:  "DELETE FROM " + l + " WHERE owner = ?",
		inboxInsert: fmt.Sprintf(insertIgnore, in, "handler, message_id, handled_ns", "?, ?, ?"),
		inboxCleanup: map[Dialect]string{
			PostgreSQL: "DELETE FROM " + in + " WHERE (handler, message_id) IN (SELECT handler, message_id FROM " + in + " WHERE handled_ns < ? LIMIT ?)",
			MySQL:      "DELETE FROM " + in + " WHERE handled_ns < ? LIMIT ?",
			SQLite:     "DELETE FROM " + in + " WHERE rowid IN (SELECT rowid FROM " + in + " WHERE handled_ns < ? LIMIT ?)",
		}[d],
	}
	for _, p := range []*string{
		&q.insert, &q.topics, &q.rows, &q.rowsAfter, &q.deleteRow, &q.dead, &q.renewLease, &q.takeLease, &q.dropLeases, &q.inboxInsert, &q.inboxCleanup,
		&q.retry, &q.schedule, &q.cancel, &q.dueIDs, &q.nextDue, &q.lanes, &q.members, &q.dropLease,
		&q.backlog, &q.lag, &q.deadByTopic, &q.inboundDeadByTopic, &q.scheduledSummary,
	} {
		*p = d.Rebind(*p)
	}
	q.dialect = d
	return q
}

// deleteSent is the statement that deletes n rows by id, fenced by the
// relay's lease (see relay.deleteSent).
func (q queries) deleteSent(n int) string {
	return q.dialect.Rebind(fmt.Sprintf(q.deleteIn, strings.TrimSuffix(strings.Repeat("?, ", n), ", ")))
}
