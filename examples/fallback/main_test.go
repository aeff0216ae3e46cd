package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The timeline: the fallback answers while the provider is down, the
// breaker stops calling it after three failures, a probe after 30s fails,
// the next finds it back.
func TestFallbackExample(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(&out))
	assert.Equal(t, strings.Join([]string{
		"up          10003 cents from live (provider called 1 times)",
		"down        9999 cents from cache (provider called 2 times)",
		"down        9999 cents from cache (provider called 3 times)",
		"            breaker closed -> open",
		"down        9999 cents from cache (provider called 4 times)",
		"down        9999 cents from cache (provider called 4 times)",
		"down        9999 cents from cache (provider called 4 times)",
		"            breaker open -> half-open",
		"            breaker half-open -> open",
		"+30s        9999 cents from cache (provider called 5 times)",
		"            breaker open -> half-open",
		"            breaker half-open -> closed",
		"back up     10003 cents from live (provider called 6 times)",
		"back up     10003 cents from live (provider called 7 times)",
	}, "\n")+"\n", out.String())
}
