package fxbus

import (
	"encoding/json"

	"github.com/fxcqrs/fxcqrs/internal/confdecode"
)

// UnmarshalJSON decodes a RetryPolicy; InitialInterval and MaxInterval
// may be duration strings ("100ms") or nanoseconds.
func (p *RetryPolicy) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, confdecode.Shadow(p)) }

// UnmarshalYAML decodes a RetryPolicy; InitialInterval and MaxInterval
// may be duration strings (100ms) or nanoseconds.
func (p *RetryPolicy) UnmarshalYAML(unmarshal func(any) error) error {
	return unmarshal(confdecode.Shadow(p))
}
