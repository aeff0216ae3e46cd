package upkeep_test

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// database/sql's connection opener outlives a closed *sql.DB by a
		// moment; it is named here, and only it.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}
