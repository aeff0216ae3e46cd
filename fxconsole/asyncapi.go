package fxconsole

import (
	"net/http"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/asyncapi"
)

// WithContract serves the service's asynchronous contract, its bus's
// routes and subscriptions as an AsyncAPI 3.0 document, at
// asyncapi.json under the console (behind its authorization, like every
// page), made from contract at each request (under fx: the bus's
// Contract method).
func WithContract(info asyncapi.Info, contract func() fxbus.Contract) Option {
	return func(c *Console) {
		c.mux.HandleFunc("GET /asyncapi.json", func(w http.ResponseWriter, _ *http.Request) {
			doc, err := asyncapi.Document(info, contract())
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(doc)
		})
	}
}
