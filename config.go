package fxcqrs

import (
	"errors"
	"fmt"

	"github.com/fxcqrs/fxcqrs/internal/engine"
)

// Default limits, taken from python-cqrs: its request mediator processes
// one event handler at a time, its streaming mediator ten.
const (
	// DefaultMaxConcurrentEventHandlers is the limit of Config.Events when
	// MaxConcurrentHandlers is 0.
	DefaultMaxConcurrentEventHandlers = 1
	// DefaultMaxConcurrentStreamEventHandlers is the limit of
	// Config.StreamEvents when MaxConcurrentHandlers is 0.
	DefaultMaxConcurrentStreamEventHandlers = 10
	// DefaultBackgroundQueueSize is the queue bound of background event
	// processing when QueueSize is 0.
	DefaultBackgroundQueueSize = 1024
)

// Config says how the mediator processes the events that handlers emit.
// The zero Config is valid and means python-cqrs's defaults: events of
// Send, Exec and Publish run concurrently one at a time (limit 1), events of
// streams concurrently ten at a time.
//
// Applications usually supply it through fx:
//
//	fx.Supply(fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: 3}})
//
// The struct carries json and yaml tags so it can be part of an
// application's own configuration file.
type Config struct {
	// Events configures the events emitted under Send, Exec and Publish,
	// follow-up events included. Optional; the limit defaults to
	// DefaultMaxConcurrentEventHandlers (1).
	Events EventConfig `json:"events" yaml:"events"`

	// StreamEvents configures the events emitted by stream handlers, which
	// are processed item by item. Optional; the limit defaults to
	// DefaultMaxConcurrentStreamEventHandlers (10). Background is not
	// allowed here: an item's events finish before the item is delivered.
	StreamEvents EventConfig `json:"streamEvents" yaml:"streamEvents"`
}

// EventConfig configures one kind of event processing. Its zero value is
// the concurrent mode with the default limit.
type EventConfig struct {
	// MaxConcurrentHandlers bounds how many event handler invocations (one
	// event × one handler) run at once in the whole mediator, shared by all
	// concurrent calls. Optional; 0 means the default of the kind (1 for
	// Events, 10 for StreamEvents). Negative is an error; with Sequential it
	// has no effect (logged once). python-cqrs: max_concurrent_event_handlers.
	MaxConcurrentHandlers int `json:"maxConcurrentHandlers" yaml:"maxConcurrentHandlers"`

	// Sequential runs invocations one after another on the caller's
	// goroutine, in emit order, then handler order, follow-ups breadth
	// first. Optional; default false (concurrent). python-cqrs:
	// concurrent_event_handle_enable=False.
	Sequential bool `json:"sequential" yaml:"sequential"`

	// Background makes Send, Exec and Publish return as soon as the handler
	// has returned; events then run on the mediator's workers under the same
	// limit, and Stop drains them. Failures go to the logger and to the
	// BackgroundErrorHandler. Optional; default false. Not allowed with
	// Sequential, nor in Config.StreamEvents.
	Background bool `json:"background" yaml:"background"`

	// QueueSize bounds how many background invocations may wait for a slot.
	// A call that would exceed it waits for room (or for its context), so
	// nothing is dropped. Optional; 0 means DefaultBackgroundQueueSize.
	// Without Background it has no effect (logged once).
	QueueSize int `json:"queueSize" yaml:"queueSize"`
}

// Validate reports every problem of c at once, joined with errors.Join, or
// nil when c is valid. New and Module call it. Each problem names the Go
// field and, in parentheses, its key in JSON and YAML.
//
// Settings that are merely unused are not errors: a MaxConcurrentHandlers
// beside Sequential (python-cqrs accepts both parameters together, and a
// service that turns Sequential on to debug must still start), a QueueSize
// without Background. The mediator says once, at info level when it is
// made, that it ignores them. Settings that
// contradict each other, such as Sequential with Background, are errors.
func (c Config) Validate() error {
	errs := c.Events.validate("Events", "events")
	errs = append(errs, c.StreamEvents.validate("StreamEvents", "streamEvents")...)
	if c.StreamEvents.Background {
		errs = append(errs, errors.New("fxcqrs.Config: StreamEvents.Background (streamEvents.background) is not supported: a stream delivers an item only after its events ran"))
	}
	return errors.Join(errs...)
}

// unused lists the settings of c that have no effect, one sentence each,
// naming the Go field and its JSON/YAML key.
func (c Config) unused() []string {
	return append(c.Events.unused("Events", "events"), c.StreamEvents.unused("StreamEvents", "streamEvents")...)
}

func (c EventConfig) validate(field, key string) []error {
	var errs []error
	if c.MaxConcurrentHandlers < 0 {
		errs = append(errs, fmt.Errorf("fxcqrs.Config: %s.MaxConcurrentHandlers (%s.maxConcurrentHandlers) must not be negative: got %d", field, key, c.MaxConcurrentHandlers))
	}
	if c.Sequential && c.Background {
		errs = append(errs, fmt.Errorf("fxcqrs.Config: %s.Sequential (%s.sequential) and %s.Background (%s.background) cannot be combined", field, key, field, key))
	}
	if c.QueueSize < 0 {
		errs = append(errs, fmt.Errorf("fxcqrs.Config: %s.QueueSize (%s.queueSize) must not be negative: got %d", field, key, c.QueueSize))
	}
	return errs
}

func (c EventConfig) unused(field, key string) []string {
	var notes []string
	if c.Sequential && c.MaxConcurrentHandlers > 0 {
		notes = append(notes, fmt.Sprintf("%s.MaxConcurrentHandlers (%s.maxConcurrentHandlers) is %d but has no effect: %s.Sequential (%s.sequential) runs one event handler at a time",
			field, key, c.MaxConcurrentHandlers, field, key))
	}
	if c.QueueSize > 0 && !c.Background {
		notes = append(notes, fmt.Sprintf("%s.QueueSize (%s.queueSize) is %d but has no effect without %s.Background (%s.background)",
			field, key, c.QueueSize, field, key))
	}
	return notes
}

// mode is the engine's view of c, with def as the default limit.
func (c EventConfig) mode(def int) engine.Mode {
	return engine.Mode{Limit: c.limit(def), Sequential: c.Sequential, Background: c.Background, QueueSize: c.queueSize()}
}

// limit returns the effective concurrency limit.
func (c EventConfig) limit(def int) int {
	if c.MaxConcurrentHandlers > 0 {
		return c.MaxConcurrentHandlers
	}
	return def
}

func (c EventConfig) queueSize() int {
	if c.QueueSize > 0 {
		return c.QueueSize
	}
	return DefaultBackgroundQueueSize
}
