package fxconsole_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/fxcqrs/fxcqrs/fxconsole"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxsaga"

	_ "modernc.org/sqlite" // the "sqlite" driver
)

// The repair console on a service's database: refused without an
// authorization function, then mounted under a prefix, where it answers
// only the callers the function accepts. Under fx, fxconsole.Module
// makes it from the graph's outbox and saga store.
func ExampleNew() {
	dir, err := os.MkdirTemp("", "fxconsole-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir) //nolint:errcheck // a temporary directory
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "app.db"))
	if err != nil {
		panic(err)
	}
	defer db.Close() //nolint:errcheck // an example
	ctx := context.Background()
	if err := fxoutbox.Migrate(ctx, db, fxoutbox.SQLite, fxoutbox.Tables{}); err != nil {
		panic(err)
	}
	if err := fxsaga.Migrate(ctx, db, fxoutbox.SQLite, fxsaga.Tables{}); err != nil {
		panic(err)
	}
	admin, err := fxoutbox.NewAdmin(db, fxoutbox.SQLite, fxoutbox.Tables{}, nil)
	if err != nil {
		panic(err)
	}
	sagas, err := fxsaga.NewSQL(db, fxoutbox.SQLite, fxsaga.Tables{}, 0)
	if err != nil {
		panic(err)
	}

	_, err = fxconsole.New(admin, sagas, fxconsole.Config{})
	fmt.Println(err != nil) // no Authorize: refused

	console, err := fxconsole.New(admin, sagas, fxconsole.Config{
		Authorize: func(r *http.Request) bool { return r.Header.Get("X-Operator") == "yes" }, // your auth proxy's header
	})
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ops/", http.StripPrefix("/ops", console))

	for _, operator := range []string{"", "yes"} {
		req := httptest.NewRequest(http.MethodGet, "/ops/dead", nil)
		req.Header.Set("X-Operator", operator)
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		fmt.Printf("operator %q: %d\n", operator, rec.Code)
	}
	// Output:
	// true
	// operator "": 403
	// operator "yes": 200
}
