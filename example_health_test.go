package fxcqrs_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/fxcqrs/fxcqrs"
)

// Health checks answer the orchestrator's probes: liveness fails only
// when the process cannot work at all, readiness also when a dependency
// is away. Under fx, fxcqrs.HealthModule collects every module's checks.
func ExampleHealth() {
	brokerUp := false
	h := fxcqrs.NewHealth(
		fxcqrs.Check{Name: "db", Run: func(context.Context) error { return nil }},
		fxcqrs.Check{Name: "broker", Readiness: true, Run: func(context.Context) error {
			if !brokerUp {
				return errors.New("connection down")
			}
			return nil
		}},
	)
	mux := http.NewServeMux()
	mux.Handle("/healthz", h.Handler())
	mux.Handle("/readyz", h.Handler())

	for _, path := range []string{"/healthz", "/readyz"} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		fmt.Print(path, " ", rec.Code, " ", rec.Body.String())
	}
	// Output:
	// /healthz 200 {"status":"ok"}
	// /readyz 503 {"status":"unavailable","failing":{"broker":"connection down"}}
}
