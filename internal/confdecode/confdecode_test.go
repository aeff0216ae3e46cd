package confdecode

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

type inner struct {
	Wait time.Duration `json:"wait" yaml:"wait"`
}

func (i *inner) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, Shadow(i)) }

func (i *inner) UnmarshalYAML(unmarshal func(any) error) error { return unmarshal(Shadow(i)) }

type sample struct {
	Name    string        `json:"name" yaml:"name"`
	Every   time.Duration `json:"every" yaml:"every"`
	Inner   inner         `json:"inner" yaml:"inner"`
	Skipped func()        `json:"-" yaml:"-"`
	hidden  int
}

func (s *sample) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, Shadow(s)) }

func (s *sample) UnmarshalYAML(unmarshal func(any) error) error { return unmarshal(Shadow(s)) }

func TestShadowJSON(t *testing.T) {
	t.Parallel()
	s := sample{Name: "kept", hidden: 7}
	require.NoError(t, json.Unmarshal([]byte(`{"every":"1m30s","inner":{"wait":5}}`), &s))
	assert.Equal(t, sample{Name: "kept", Every: 90 * time.Second, Inner: inner{Wait: 5}, hidden: 7}, s)
	require.Error(t, json.Unmarshal([]byte(`{"every":"soon"}`), &s))
	require.Error(t, json.Unmarshal([]byte(`{"every":true}`), &s))
}

func TestShadowYAML(t *testing.T) {
	t.Parallel()
	var s sample
	require.NoError(t, yaml.Unmarshal([]byte("name: a\nevery: 50ms\ninner:\n  wait: 2s\n"), &s))
	assert.Equal(t, sample{Name: "a", Every: 50 * time.Millisecond, Inner: inner{Wait: 2 * time.Second}}, s)
	require.NoError(t, yaml.Unmarshal([]byte("every: 1000\n"), &s))
	assert.Equal(t, time.Microsecond, s.Every, "integers are nanoseconds")
}
