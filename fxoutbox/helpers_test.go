package fxoutbox_test

import (
	"testing"

	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// database/sql's connection opener outlives a closed *sql.DB by a
		// moment; it is named here, and only it.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}

// database is one test's own database, migrated (see outboxtest).
type database = outboxtest.Database

var (
	openDatabase    = outboxtest.Open
	forEachDatabase = outboxtest.ForEach
	count           = outboxtest.Count
	reachable       = outboxtest.Reachable
	env             = outboxtest.Env
)
