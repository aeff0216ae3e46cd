package crashtest_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/internal/crashtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Each round's child is killed while it works (it never returns), then
// the drain child runs to its end; each appends what it is to a file.
func TestHarness(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	crashtest.Harness{
		Child: "TestHarnessChild", Env: map[string]string{"CRASHTEST_LOG": path},
		Rounds: 3, MinUp: 100 * time.Millisecond, MaxUp: 150 * time.Millisecond,
	}.Run(t)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, []string{"work 1", "work 2", "work 3", "drain 0"}, strings.Split(strings.TrimSpace(string(data)), "\n"))
}

func TestHarnessChild(t *testing.T) {
	if crashtest.Mode() == "" {
		t.Skip("started by TestHarness only")
	}
	f, err := os.OpenFile(os.Getenv("CRASHTEST_LOG"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	require.NoError(t, err)
	_, err = fmt.Fprintf(f, "%s %d\n", crashtest.Mode(), crashtest.Round())
	require.NoError(t, err)
	require.NoError(t, f.Close())
	if crashtest.Mode() == crashtest.Work {
		crashtest.Ready()
		select {} // until killed
	}
}
