package fxbus

import (
	"errors"
	"net/http"
)

// TenantHandler returns an http.Handler that serves each request with
// next under its tenant ([WithTenant]): the one from names (from the
// request's host, path or authenticated claims), resolved by tenants as a
// subscription resolves a message's. A name tenants does not know, or
// that is no tenant id at all (too long, not UTF-8, control characters),
// is answered 403 Forbidden without calling next, and without the name in
// the answer; one tenants cannot resolve now (an error that does not wrap
// [ErrUnknownTenant]) is answered 503 Service Unavailable. A request from
// names no tenant for ("") is the default tenant's.
func TenantHandler(tenants Tenants, from func(*http.Request) string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := from(r)
		if id == "" {
			next.ServeHTTP(w, r.WithContext(WithTenant(r.Context(), "")))
			return
		}
		if checkTenantID(id) != nil {
			http.Error(w, "unknown tenant", http.StatusForbidden)
			return
		}
		known, err := tenants.Resolve(r.Context(), id)
		switch {
		case errors.Is(err, ErrUnknownTenant):
			http.Error(w, "unknown tenant", http.StatusForbidden)
			return
		case err != nil:
			http.Error(w, "the tenant cannot be resolved now", http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r.WithContext(WithTenant(r.Context(), known)))
	})
}
