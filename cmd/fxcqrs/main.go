// Command fxcqrs shows and repairs what fxcqrs's durable path holds in a
// database: the outbox's backlog, dead letters and leases, and the sagas.
// It talks to the database alone: no service needs to run, and it is safe
// while replicas run (a replay is one transaction; a saga's mark is one
// fenced save that the running service's recovery then acts on).
//
//	fxcqrs -dialect postgresql -dsn "$DSN" outbox status
//	fxcqrs dead list [-topic T] [-name N] [-error TEXT] [-since RFC3339] [-until RFC3339] [-discarded] [-limit N]
//	fxcqrs dead show ID
//	fxcqrs dead replay -who ME -why REASON ID...
//	fxcqrs dead discard -who ME -why REASON ID...
//	fxcqrs saga list [-name N] [-status S] [-limit N] [-offset N] [-oldest]
//	fxcqrs saga show ID                 # its state, context, log and diagram, where it stopped marked
//	fxcqrs saga retry -who ME -why REASON ID
//	fxcqrs saga compensate -from STEP -who ME -why REASON ID
//	fxcqrs saga resolve -who ME -why REASON ID
//	fxcqrs tenant list                  # the tenants with dead letters or schedules (the shared mode)
//	fxcqrs repair list [-limit N]       # the recorded repairs, each with its tenant
//
// Per tenant: -tenant T (before the command) reads and repairs tenant T's
// outbox rows alone (the saga commands refuse it), in the shared mode (-tenant "" the default tenant's; without
// it, every tenant's); -schema S connects to a tenant's store that is a
// PostgreSQL schema (the connection's search_path; S a plain lower-case
// identifier); a tenant with a database of its own is its -dsn. The
// listings show each row's tenant.
//
// -json prints JSON for scripts instead of tables. The database is
// -dialect (postgresql, mysql or sqlite) and -dsn, or FXCQRS_DIALECT and
// FXCQRS_DSN; the tables have their default names.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "fxcqrs:", err)
		os.Exit(1)
	}
}
