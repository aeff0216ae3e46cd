package fxoutbox

import (
	"encoding/json"
	"fmt"

	"github.com/fxcqrs/fxcqrs/internal/confdecode"
)

// UnmarshalJSON decodes a RelayConfig; its durations may be duration
// strings ("1s") or nanoseconds.
func (c *RelayConfig) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, confdecode.Shadow(c)) }

// UnmarshalYAML decodes a RelayConfig; its durations may be duration
// strings (1s) or nanoseconds.
func (c *RelayConfig) UnmarshalYAML(unmarshal func(any) error) error {
	return unmarshal(confdecode.Shadow(c))
}

// UnmarshalJSON decodes a Config; InboxRetention and the relay's
// durations may be duration strings ("168h") or nanoseconds.
func (c *Config) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, confdecode.Shadow(c)) }

// UnmarshalYAML decodes a Config; InboxRetention and the relay's
// durations may be duration strings (168h) or nanoseconds.
func (c *Config) UnmarshalYAML(unmarshal func(any) error) error {
	return unmarshal(confdecode.Shadow(c))
}

// MarshalText names the dialect: "postgresql", "mysql" or "sqlite".
func (d Dialect) MarshalText() ([]byte, error) {
	if d < PostgreSQL || d > SQLite {
		return nil, fmt.Errorf("fxoutbox: unknown %v", d)
	}
	return []byte(d.String()), nil
}

// UnmarshalText reads a dialect's name, as configuration files give it:
// "postgresql" (or "postgres"), "mysql" (or "mariadb"), "sqlite".
func (d *Dialect) UnmarshalText(b []byte) error {
	switch string(b) {
	case "postgresql", "postgres":
		*d = PostgreSQL
	case "mysql", "mariadb":
		*d = MySQL
	case "sqlite":
		*d = SQLite
	default:
		return fmt.Errorf("fxoutbox: unknown dialect %q: want postgresql, mysql or sqlite", b)
	}
	return nil
}
