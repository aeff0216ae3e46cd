package fxoutbox

import (
	"encoding/json"

	"github.com/fxcqrs/fxcqrs/internal/confdecode"
)

// UnmarshalJSON decodes a Config; InboxRetention and the relay's
// durations may be duration strings ("168h") or nanoseconds.
func (c *Config) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, confdecode.Shadow(c)) }

// UnmarshalYAML decodes a Config; InboxRetention and the relay's
// durations may be duration strings (168h) or nanoseconds.
func (c *Config) UnmarshalYAML(unmarshal func(any) error) error {
	return unmarshal(confdecode.Shadow(c))
}
