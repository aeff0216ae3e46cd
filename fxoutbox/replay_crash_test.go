package fxoutbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A replay killed with SIGKILL at random moments, five times, then run
// to its end: every dead letter is, after each kill, in the dead letters
// or back in the outbox, never both and never neither; at the end every
// one is in the outbox once.
func TestReplayCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("kills processes; not with -short")
	}
	t.Parallel()
	outboxtest.ForEach(t, func(t *testing.T, d database) {
		const letters = 300
		for i := range letters {
			_, err := d.DB.Exec(d.Dialect.Rebind("INSERT INTO fxcqrs_outbox_dead (id, topic, message_id, payload, metadata, error, failed_ns) VALUES (?, 'orders', ?, ?, '{}', 'refused', 1)"),
				i+1, fmt.Sprint("m-", i+1), []byte(`{}`))
			require.NoError(t, err)
		}
		child := func() *exec.Cmd {
			cmd := exec.Command(os.Args[0], "-test.run=^TestReplayCrashChild$")
			cmd.Env = append(os.Environ(), "FXCQRS_REPLAY_CRASH_DSN="+d.DSN, "FXCQRS_REPLAY_CRASH_DRIVER="+d.Driver, "FXCQRS_REPLAY_CRASH_DIALECT="+d.Dialect.String())
			return cmd
		}
		once := func() {
			t.Helper()
			var wrong int
			require.NoError(t, d.DB.QueryRow(`SELECT COUNT(*) FROM (SELECT message_id, COUNT(*) AS n FROM (
				SELECT message_id FROM fxcqrs_outbox UNION ALL SELECT message_id FROM fxcqrs_outbox_dead) a GROUP BY message_id) b WHERE n <> 1`).Scan(&wrong))
			assert.Zero(t, wrong, "a letter in both tables")
			assert.Equal(t, letters, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox")+count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_dead"), "none lost")
		}
		for range 5 {
			cmd := child()
			stdout, err := cmd.StdoutPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())
			ready := make([]byte, len(childReady))
			_, err = io.ReadFull(stdout, ready)
			require.NoError(t, err)
			time.Sleep(time.Duration(rand.IntN(60)) * time.Millisecond) // a random moment: mid-transaction, mid-commit
			require.NoError(t, cmd.Process.Kill())
			_ = cmd.Wait()
			once()
		}
		out, err := child().CombinedOutput()
		require.NoError(t, err, "%s", out)
		once()
		assert.Zero(t, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_dead"), "all replayed")
		assert.Equal(t, letters, count(t, d.DB, "SELECT COUNT(DISTINCT message_id) FROM fxcqrs_outbox"))
	})
}

// childReady is what a child prints once it begins.
const childReady = "replaying\n"

// TestReplayCrashChild replays the dead letters, five at a time, until
// none is left or it is killed.
func TestReplayCrashChild(t *testing.T) {
	dsn := os.Getenv("FXCQRS_REPLAY_CRASH_DSN")
	if dsn == "" {
		t.Skip("started by TestReplayCrash only")
	}
	db, err := sql.Open(os.Getenv("FXCQRS_REPLAY_CRASH_DRIVER"), dsn)
	require.NoError(t, err)
	defer db.Close()
	var dialect fxoutbox.Dialect
	require.NoError(t, dialect.UnmarshalText([]byte(os.Getenv("FXCQRS_REPLAY_CRASH_DIALECT"))))
	admin, err := fxoutbox.NewAdmin(db, dialect, fxoutbox.Tables{}, nil)
	require.NoError(t, err)
	fmt.Print(childReady)
	ctx := context.Background()
	for {
		letters, err := admin.ListDead(ctx, fxoutbox.DeadLetterFilter{Limit: 5})
		require.NoError(t, err)
		if len(letters) == 0 {
			return
		}
		ids := make([]int64, len(letters))
		for i, l := range letters {
			ids[i] = l.ID
		}
		_, err = admin.Replay(ctx, ids, "crash test", "replaying everything")
		require.NoError(t, err)
	}
}
