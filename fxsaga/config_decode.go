package fxsaga

import (
	"encoding/json"

	"github.com/fxcqrs/fxcqrs/internal/confdecode"
)

// UnmarshalJSON decodes a RunnerConfig; CompensationBackoff may be a
// duration string ("100ms") or nanoseconds.
func (c *RunnerConfig) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, confdecode.Shadow(c)) }

// UnmarshalYAML decodes a RunnerConfig; CompensationBackoff may be a
// duration string (100ms) or nanoseconds.
func (c *RunnerConfig) UnmarshalYAML(unmarshal func(any) error) error {
	return unmarshal(confdecode.Shadow(c))
}

// UnmarshalJSON decodes a Config; RecoveryInterval and Lease may be a duration
// string ("30s") or nanoseconds.
func (c *Config) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, confdecode.Shadow(c)) }

// UnmarshalYAML decodes a Config; RecoveryInterval and Lease may be a duration
// string (30s) or nanoseconds.
func (c *Config) UnmarshalYAML(unmarshal func(any) error) error {
	return unmarshal(confdecode.Shadow(c))
}
