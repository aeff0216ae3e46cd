package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStreamingExample(t *testing.T) {
	for _, cfg := range []fxcqrs.Config{{}, {StreamEvents: fxcqrs.EventConfig{Sequential: true}}} {
		var out bytes.Buffer
		require.NoError(t, run(context.Background(), &out, 4, cfg))
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		index := func(s string) int {
			for i, l := range lines {
				if strings.Contains(l, s) {
					return i
				}
			}
			t.Fatalf("%q not in output:\n%s", s, out.String())
			return -1
		}
		for id := 1; id <= 4; id++ {
			item := index(fmt.Sprintf("item   Row{ID: %d,", id))
			assert.Less(t, index(fmt.Sprintf("RowExported{%d} -> audit log", id)), item, "row %d's events before it", id)
			assert.Less(t, index(fmt.Sprintf("RowExported{%d} -> export metrics", id)), item)
			if id > 1 {
				assert.Less(t, index(fmt.Sprintf("item   Row{ID: %d,", id-1)), item)
			}
		}
		assert.Less(t, index("item   Row{ID: 4,"), index("ExportFinished{4}"))
		assert.Equal(t, "stream ended", lines[len(lines)-1], "trailing events ran before the end")
		assert.Len(t, lines, 4*3+2)
	}
}
