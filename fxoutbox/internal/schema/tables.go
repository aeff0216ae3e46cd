package schema

import "github.com/fxcqrs/fxcqrs/internal/sqlschema"

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

// WithDefaults is t with the default names for the empty ones. A function,
// not a method: the root package hands Tables on as fxoutbox.Tables,
// whose method set users see.
func WithDefaults(t Tables) Tables {
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

// Validate checks t's names as SQL identifiers, none of them another
// module's.
func Validate(t Tables) error {
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

// LaneLeases is the name of the table of the lane leases that consumer
// replicas share a topic's lanes by (fxoutbox.LaneLeaseStore): the Leases
// table's name and "_lanes", shortened with a hash past 63 characters.
func LaneLeases(t Tables) string { return sqlschema.IndexName(WithDefaults(t).Leases, "lanes") }

// RateLimits is the name of the table of the rate limits subscriptions
// share across replicas (fxoutbox's shared limiter): the Outbox table's
// name and "_limits", shortened with a hash past 63 characters.
func RateLimits(t Tables) string { return sqlschema.IndexName(WithDefaults(t).Outbox, "limits") }
