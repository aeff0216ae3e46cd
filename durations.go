package fxcqrs

import (
	"encoding/json"

	"github.com/fxcqrs/fxcqrs/internal/confdecode"
)

// Durations in configuration files read as Go duration strings ("50ms",
// "1m30s"), as a person writes them; integers keep meaning nanoseconds,
// as encoding/json writes a time.Duration. Every module's configuration
// types decode the same way, through confdecode.

// UnmarshalJSON decodes a RetryPolicy; Initial and Max may be duration
// strings ("50ms") or nanoseconds.
func (p *RetryPolicy) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, confdecode.Shadow(p)) }

// UnmarshalYAML decodes a RetryPolicy; Initial and Max may be duration
// strings (50ms) or nanoseconds.
func (p *RetryPolicy) UnmarshalYAML(unmarshal func(any) error) error {
	return unmarshal(confdecode.Shadow(p))
}

// UnmarshalJSON decodes Timeouts; each may be a duration string ("2s") or
// nanoseconds.
func (t *Timeouts) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, confdecode.Shadow(t)) }

// UnmarshalYAML decodes Timeouts; each may be a duration string (2s) or
// nanoseconds.
func (t *Timeouts) UnmarshalYAML(unmarshal func(any) error) error {
	return unmarshal(confdecode.Shadow(t))
}

// UnmarshalJSON decodes a BreakerConfig; Window and OpenDuration may be
// duration strings ("30s") or nanoseconds.
func (c *BreakerConfig) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, confdecode.Shadow(c)) }

// UnmarshalYAML decodes a BreakerConfig; Window and OpenDuration may be
// duration strings (30s) or nanoseconds.
func (c *BreakerConfig) UnmarshalYAML(unmarshal func(any) error) error {
	return unmarshal(confdecode.Shadow(c))
}
