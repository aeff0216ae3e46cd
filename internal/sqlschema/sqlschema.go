// Package sqlschema is the SQL machinery the outbox and saga modules
// share: table names checked as identifiers and quoted, schemas rendered
// from their embedded templates, numbered migrations applied under a lock
// (migrate.go), and each module's default table names (Defaults), so that
// none takes another's.
package sqlschema

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
)

// MaxName is the longest table name accepted: PostgreSQL's limit, the
// lowest of the three databases'.
const MaxName = 63

var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// CheckNames reports, as module's error, the names that are not SQL
// identifiers of at most MaxName characters.
func CheckNames(module string, names ...string) error {
	var bad []string
	for _, name := range names {
		if !identifier.MatchString(name) || len(name) > MaxName {
			bad = append(bad, strconv.Quote(name))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%s: table names must be SQL identifiers (a letter or _, then letters, digits or _, %d at most): %s",
			module, MaxName, strings.Join(bad, ", "))
	}
	return nil
}

// Quote quotes a checked identifier: with backticks for MySQL, double
// quotes elsewhere.
func Quote(backticks bool, name string) string {
	if backticks {
		return "`" + name + "`"
	}
	return `"` + name + `"`
}

// Render executes the template at path in fsys with data (quoted names).
func Render(fsys fs.FS, path string, data map[string]string) (string, error) {
	src, err := fs.ReadFile(fsys, path)
	if err != nil {
		return "", err
	}
	tmpl, err := template.New(path).Option("missingkey=error").Parse(string(src))
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	err = tmpl.Execute(&b, data)
	return b.String(), err
}

func stripComments(stmt string) string {
	var b strings.Builder
	for _, line := range strings.Split(stmt, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "--") {
			b.WriteString(line)
			b.WriteString("\n")
		}
	}
	return b.String()
}

// Role is one table of a module: what it holds, and its name.
type Role struct{ Role, Name string }

// CheckRoles reports, as module's error, every name that is not an
// identifier of at most MaxName characters, two roles given one name, and
// a name that another module's tables (foreign, their default names) use.
func CheckRoles(module string, roles []Role, foreign []string) error {
	names := make([]string, len(roles))
	for i, r := range roles {
		names[i] = r.Name
	}
	errs := []error{CheckNames(module, names...)}
	seen := map[string]string{}
	for _, r := range roles {
		if prev, ok := seen[r.Name]; ok {
			errs = append(errs, fmt.Errorf("%s: tables %s and %s are both named %q: each role needs a table of its own", module, prev, r.Role, r.Name))
		}
		seen[r.Name] = r.Role
		if slices.Contains(foreign, r.Name) {
			errs = append(errs, fmt.Errorf("%s: table %s is named %q, which another fxcqrs module uses", module, r.Role, r.Name))
		}
	}
	return errors.Join(errs...)
}

// Defaults is every module's default table names, by module.
var Defaults = map[string][]string{
	"fxoutbox": {"fxcqrs_outbox", "fxcqrs_outbox_dead", "fxcqrs_outbox_leases", "fxcqrs_inbox", "fxcqrs_outbox_scheduled", "fxcqrs_outbox_repairs", "fxcqrs_outbox_inbound_dead", "fxcqrs_outbox_migrations"},
	"fxsaga":   {"fxcqrs_sagas", "fxcqrs_saga_log", "fxcqrs_saga_migrations"},
}

// Foreign is the default table names of every module but module.
func Foreign(module string) []string {
	var out []string
	for m, names := range Defaults {
		if m != module {
			out = append(out, names...)
		}
	}
	return out
}
