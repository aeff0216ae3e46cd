package lib

import (
	"errors"
	"fmt"
)

func New(name string) error {
	if name == "" {
		return errors.New("lib.New: the name is empty")
	}
	if name == "x" {
		return fmt.Errorf("wrapped: %w", errors.New("nil"))
	}
	return nil
}

func Start(addr string) error {
	go func() { _ = errors.New("lib: run: a run-time failure, not a start") }()
	return fmt.Errorf("lib: start: no broker at %s", addr)
}
