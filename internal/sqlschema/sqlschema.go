// Package sqlschema is the SQL machinery the outbox and saga modules
// share: table names checked as identifiers and quoted, schemas rendered
// from their embedded templates, and run statement by statement. It knows
// no module's tables.
package sqlschema

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"regexp"
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

// Run runs schema's statements, separated by semicolons, one by one,
// skipping the empty ones and those made only of comments.
func Run(ctx context.Context, db *sql.DB, schema string) error {
	for _, stmt := range strings.Split(schema, ";") {
		if strings.TrimSpace(stripComments(stmt)) == "" {
			continue
		}
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return err
		}
	}
	return nil
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
