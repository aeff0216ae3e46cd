package fxcqrs

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Durations in configuration files read as Go duration strings ("50ms",
// "1m30s"), as a person writes them; integers keep meaning nanoseconds,
// as encoding/json writes a time.Duration. The YAML methods use the
// unmarshal-function form that gopkg.in/yaml.v3, its successor
// go.yaml.in/yaml/v3 and yaml.v2 all call, so the core imports no YAML
// package. Each configuration type decodes through one shadow struct,
// with both tags, whose durations are of type duration.

// duration is a time.Duration in a configuration file: a duration string
// or a number of nanoseconds.
type duration time.Duration

// UnmarshalJSON decodes a duration string ("50ms") or nanoseconds.
func (d *duration) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		s, err := strconv.Unquote(string(b))
		if err != nil {
			return err
		}
		return d.parse(s)
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("want a duration such as \"50ms\" or a number of nanoseconds: %w", err)
	}
	*d = duration(n)
	return nil
}

// UnmarshalYAML decodes a duration string (50ms) or nanoseconds.
func (d *duration) UnmarshalYAML(unmarshal func(any) error) error {
	var n int64
	if err := unmarshal(&n); err == nil {
		*d = duration(n)
		return nil
	}
	var s string
	if err := unmarshal(&s); err != nil {
		return fmt.Errorf("want a duration such as 50ms or a number of nanoseconds: %w", err)
	}
	return d.parse(s)
}

func (d *duration) parse(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = duration(v)
	return nil
}

// shadow is p's fields, its durations as duration.
func (p *RetryPolicy) shadow() any {
	return &struct {
		Attempts   *int      `json:"attempts" yaml:"attempts"`
		Initial    *duration `json:"initial" yaml:"initial"`
		Max        *duration `json:"max" yaml:"max"`
		Multiplier *float64  `json:"multiplier" yaml:"multiplier"`
		Jitter     *float64  `json:"jitter" yaml:"jitter"`
	}{&p.Attempts, (*duration)(&p.Initial), (*duration)(&p.Max), &p.Multiplier, &p.Jitter}
}

// UnmarshalJSON decodes a RetryPolicy; Initial and Max may be duration
// strings ("50ms") or nanoseconds.
func (p *RetryPolicy) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, p.shadow()) }

// UnmarshalYAML decodes a RetryPolicy; Initial and Max may be duration
// strings (50ms) or nanoseconds.
func (p *RetryPolicy) UnmarshalYAML(unmarshal func(any) error) error { return unmarshal(p.shadow()) }

// shadow is t's fields as duration.
func (t *Timeouts) shadow() any {
	return &struct {
		Request *duration `json:"request" yaml:"request"`
		Command *duration `json:"command" yaml:"command"`
		Stream  *duration `json:"stream" yaml:"stream"`
		Event   *duration `json:"event" yaml:"event"`
	}{(*duration)(&t.Request), (*duration)(&t.Command), (*duration)(&t.Stream), (*duration)(&t.Event)}
}

// UnmarshalJSON decodes Timeouts; each may be a duration string ("2s") or
// nanoseconds.
func (t *Timeouts) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, t.shadow()) }

// UnmarshalYAML decodes Timeouts; each may be a duration string (2s) or
// nanoseconds.
func (t *Timeouts) UnmarshalYAML(unmarshal func(any) error) error { return unmarshal(t.shadow()) }

// shadow is c's fields, its durations as duration.
func (c *BreakerConfig) shadow() any {
	return &struct {
		ConsecutiveFailures *int      `json:"consecutiveFailures" yaml:"consecutiveFailures"`
		FailureRatio        *float64  `json:"failureRatio" yaml:"failureRatio"`
		MinRequests         *int      `json:"minRequests" yaml:"minRequests"`
		Window              *duration `json:"window" yaml:"window"`
		OpenDuration        *duration `json:"openDuration" yaml:"openDuration"`
		HalfOpenProbes      *int      `json:"halfOpenProbes" yaml:"halfOpenProbes"`
	}{&c.ConsecutiveFailures, &c.FailureRatio, &c.MinRequests, (*duration)(&c.Window), (*duration)(&c.OpenDuration), &c.HalfOpenProbes}
}

// UnmarshalJSON decodes a BreakerConfig; Window and OpenDuration may be
// duration strings ("30s") or nanoseconds.
func (c *BreakerConfig) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, c.shadow()) }

// UnmarshalYAML decodes a BreakerConfig; Window and OpenDuration may be
// duration strings (30s) or nanoseconds.
func (c *BreakerConfig) UnmarshalYAML(unmarshal func(any) error) error {
	return unmarshal(c.shadow())
}
