package admin

import "github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"

// InSchema returns the Admin of the same database whose statements name
// its tables in the PostgreSQL schema s (a tenant's store): s is checked
// by the caller (fxoutbox's tenant stores), a plain lower-case
// identifier.
func (a *Admin) InSchema(s string) *Admin {
	b := *a
	b.t = schema.InSchema(a.t, s)
	b.q = schema.NewQueries(a.d, b.t)
	return &b
}
