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
// package.

// jsonDuration is a time.Duration as JSON: a duration string or a number
// of nanoseconds.
type jsonDuration time.Duration

func (d *jsonDuration) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		s, err := strconv.Unquote(string(b))
		if err != nil {
			return err
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*d = jsonDuration(v)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("want a duration such as \"50ms\" or a number of nanoseconds: %w", err)
	}
	*d = jsonDuration(n)
	return nil
}

// UnmarshalJSON decodes a RetryPolicy; Initial and Max may be duration
// strings ("50ms") or nanoseconds.
func (p *RetryPolicy) UnmarshalJSON(b []byte) error {
	w := struct {
		Attempts   *int          `json:"attempts"`
		Initial    *jsonDuration `json:"initial"`
		Max        *jsonDuration `json:"max"`
		Multiplier *float64      `json:"multiplier"`
		Jitter     *float64      `json:"jitter"`
	}{&p.Attempts, (*jsonDuration)(&p.Initial), (*jsonDuration)(&p.Max), &p.Multiplier, &p.Jitter}
	return json.Unmarshal(b, &w)
}

// UnmarshalJSON decodes Timeouts; each may be a duration string ("2s") or
// nanoseconds.
func (t *Timeouts) UnmarshalJSON(b []byte) error {
	w := struct {
		Request *jsonDuration `json:"request"`
		Command *jsonDuration `json:"command"`
		Stream  *jsonDuration `json:"stream"`
		Event   *jsonDuration `json:"event"`
	}{(*jsonDuration)(&t.Request), (*jsonDuration)(&t.Command), (*jsonDuration)(&t.Stream), (*jsonDuration)(&t.Event)}
	return json.Unmarshal(b, &w)
}

// yamlDuration is a time.Duration as YAML: a duration string or a number
// of nanoseconds.
type yamlDuration time.Duration

func (d *yamlDuration) UnmarshalYAML(unmarshal func(any) error) error {
	var n int64
	if err := unmarshal(&n); err == nil {
		*d = yamlDuration(n)
		return nil
	}
	var s string
	if err := unmarshal(&s); err != nil {
		return fmt.Errorf("want a duration such as 50ms or a number of nanoseconds: %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = yamlDuration(v)
	return nil
}

// UnmarshalYAML decodes a RetryPolicy; Initial and Max may be duration
// strings (50ms) or nanoseconds.
func (p *RetryPolicy) UnmarshalYAML(unmarshal func(any) error) error {
	w := struct {
		Attempts   *int          `yaml:"attempts"`
		Initial    *yamlDuration `yaml:"initial"`
		Max        *yamlDuration `yaml:"max"`
		Multiplier *float64      `yaml:"multiplier"`
		Jitter     *float64      `yaml:"jitter"`
	}{&p.Attempts, (*yamlDuration)(&p.Initial), (*yamlDuration)(&p.Max), &p.Multiplier, &p.Jitter}
	return unmarshal(&w)
}

// UnmarshalYAML decodes Timeouts; each may be a duration string (2s) or
// nanoseconds.
func (t *Timeouts) UnmarshalYAML(unmarshal func(any) error) error {
	w := struct {
		Request *yamlDuration `yaml:"request"`
		Command *yamlDuration `yaml:"command"`
		Stream  *yamlDuration `yaml:"stream"`
		Event   *yamlDuration `yaml:"event"`
	}{(*yamlDuration)(&t.Request), (*yamlDuration)(&t.Command), (*yamlDuration)(&t.Stream), (*yamlDuration)(&t.Event)}
	return unmarshal(&w)
}

// UnmarshalJSON decodes a BreakerConfig; Window and OpenDuration may be
// duration strings ("30s") or nanoseconds.
func (c *BreakerConfig) UnmarshalJSON(b []byte) error {
	w := struct {
		ConsecutiveFailures *int          `json:"consecutiveFailures"`
		FailureRatio        *float64      `json:"failureRatio"`
		MinRequests         *int          `json:"minRequests"`
		Window              *jsonDuration `json:"window"`
		OpenDuration        *jsonDuration `json:"openDuration"`
		HalfOpenProbes      *int          `json:"halfOpenProbes"`
	}{&c.ConsecutiveFailures, &c.FailureRatio, &c.MinRequests, (*jsonDuration)(&c.Window), (*jsonDuration)(&c.OpenDuration), &c.HalfOpenProbes}
	return json.Unmarshal(b, &w)
}

// UnmarshalYAML decodes a BreakerConfig; Window and OpenDuration may be
// duration strings (30s) or nanoseconds.
func (c *BreakerConfig) UnmarshalYAML(unmarshal func(any) error) error {
	w := struct {
		ConsecutiveFailures *int          `yaml:"consecutiveFailures"`
		FailureRatio        *float64      `yaml:"failureRatio"`
		MinRequests         *int          `yaml:"minRequests"`
		Window              *yamlDuration `yaml:"window"`
		OpenDuration        *yamlDuration `yaml:"openDuration"`
		HalfOpenProbes      *int          `yaml:"halfOpenProbes"`
	}{&c.ConsecutiveFailures, &c.FailureRatio, &c.MinRequests, (*yamlDuration)(&c.Window), (*yamlDuration)(&c.OpenDuration), &c.HalfOpenProbes}
	return unmarshal(&w)
}
