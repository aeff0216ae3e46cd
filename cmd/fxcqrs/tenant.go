package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// Tenants: -tenant selects one tenant's rows in the shared mode (see
// fxoutbox.Admin.ForTenant); -schema connects to a tenant's store that is
// a PostgreSQL schema; tenant list and repair list.

// schemaName is what -schema takes: a plain lower-case identifier, as
// fxoutbox.TenantStore.Schema is, which needs no quoting.
var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// openDB opens dsn, on PostgreSQL with pgSchema (if set) as every
// connection's search_path: a run-time parameter of the connection, set
// through pgx's config, never spliced into the connection string or SQL.
func openDB(d fxoutbox.Dialect, dsn, pgSchema string) (*sql.DB, error) {
	if pgSchema == "" {
		return sql.Open(map[fxoutbox.Dialect]string{fxoutbox.PostgreSQL: "pgx", fxoutbox.MySQL: "mysql", fxoutbox.SQLite: "sqlite"}[d], dsn)
	}
	if d != fxoutbox.PostgreSQL {
		return nil, fmt.Errorf("-schema: a schema per tenant is PostgreSQL's; on %s, name the tenant's database in -dsn", d)
	}
	if !schemaName.MatchString(pgSchema) {
		return nil, fmt.Errorf("-schema: %q is not a plain lower-case identifier ([a-z_][a-z0-9_]{0,62})", pgSchema)
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("-dsn: %w", err)
	}
	cfg.RuntimeParams["search_path"] = pgSchema
	return stdlib.OpenDB(*cfg), nil
}

// tenantName is how a listing shows tenant: the default tenant by name.
func tenantName(tenant string) string {
	if tenant == "" {
		return "(default)"
	}
	return safe(tenant, false)
}

func (c *cli) tenantList(ctx context.Context) error {
	tenants, err := c.admin.Tenants(ctx)
	if err != nil {
		return err
	}
	rows := make([][]string, len(tenants))
	for i, t := range tenants {
		rows[i] = []string{tenantName(t)}
	}
	return c.print(tenants, []string{"TENANT"}, rows)
}

func (c *cli) repairList(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("repair list", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	limit := fs.Int("limit", 100, "at most this many, the newest first")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return errors.New("repair list [-limit N]")
	}
	repairs, err := c.admin.Repairs(ctx, *limit)
	if err != nil {
		return err
	}
	rows := make([][]string, len(repairs))
	for i, r := range repairs {
		rows[i] = []string{timeOf(r.At), r.Action, tenantName(r.Tenant), oneLine(r.Target, 60), oneLine(r.Who, 30), oneLine(r.Why, 60)}
	}
	return c.print(repairs, []string{"AT", "ACTION", "TENANT", "TARGET", "WHO", "WHY"}, rows)
}
