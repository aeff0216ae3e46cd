package fxcqrs

import "testing"

// NewUnregisteredForTest returns a mediator whose handlers were never
// registered, as under fx before Module's invoke ran.
func NewUnregisteredForTest(t testing.TB) *Mediator {
	t.Helper()
	m, err := newMediator(Config{}, nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
