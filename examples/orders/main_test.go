package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// barrier is work that holds each handler until `want` handlers have
// started, so that with a limit of N exactly N run at once, deterministically.
type barrier struct {
	mu      sync.Mutex
	started int
	want    int
	all     chan struct{}
}

func newBarrier(want int) *barrier { return &barrier{want: want, all: make(chan struct{})} }

func (b *barrier) work(context.Context, string) {
	b.mu.Lock()
	b.started++
	if b.started == b.want {
		close(b.all)
	}
	b.mu.Unlock()
	<-b.all
}

var runningRe = regexp.MustCompile(`running (\d)/`)

func TestOrdersTimeline(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  fxcqrs.Config
		peak string
	}{
		{"limit 3", fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: 3}}, "3"},
		{"limit 1", fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: 1}}, "1"},
		{"limit 8", fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: 8}}, "4"},
		{"sequential", fxcqrs.Config{Events: fxcqrs.EventConfig{Sequential: true}}, "1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := 1
			if tc.peak != "1" {
				want = int(tc.peak[0] - '0')
			}
			var out bytes.Buffer
			require.NoError(t, run(context.Background(), &out, tc.cfg, newBarrier(want).work))
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")

			var starts, dones, response, maxRunning int
			for i, line := range lines {
				switch {
				case strings.Contains(line, " start "):
					starts++
				case strings.Contains(line, " done "):
					dones++
				case strings.Contains(line, " response "):
					response = i
					assert.Equal(t, 4, dones, "the response comes after all four events")
				}
				if m := runningRe.FindStringSubmatch(line); m != nil {
					maxRunning = max(maxRunning, int(m[1][0]-'0'))
				}
			}
			assert.Equal(t, 4, starts)
			assert.Equal(t, 4, dones)
			assert.NotZero(t, response)
			assert.Equal(t, int(tc.peak[0]-'0'), maxRunning)
			assert.Equal(t, "peak: "+tc.peak+" event handlers at once", lines[len(lines)-1])
			if tc.name == "limit 3" {
				// The fourth starts only after one of the first three is done.
				fourth := -1
				firstDone := -1
				n := 0
				for i, line := range lines {
					if strings.Contains(line, " start ") {
						n++
						if n == 4 {
							fourth = i
						}
					}
					if firstDone < 0 && strings.Contains(line, " done ") {
						firstDone = i
					}
				}
				assert.Greater(t, fourth, firstDone, "the fourth waited for a slot:\n%s", out.String())
			}
		})
	}
}

// A bad limit fails before the example says anything about its limit.
func TestOrdersRejectsANegativeLimit(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), &out, fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: -1}}, newBarrier(1).work)
	require.ErrorContains(t, err, "must not be negative")
	assert.Empty(t, out.String())
}
