package bustest

import (
	"errors"
	"io"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Effects count once per message id, and a key's wrong-order pairs are
// every pair whose later message's effect came first.
func TestEffectsCountWrongOrderPairs(t *testing.T) {
	t.Parallel()
	e := newEffects()
	for i, seq := range []int{0, 1, 4, 5, 2, 3} {
		e.record(1, "a"+string(rune('0'+i)), Keyed{Key: "a", Seq: seq})
	}
	e.record(1, "a0", Keyed{Key: "a", Seq: 0}) // handled again: no second effect
	e.record(1, "b0", Keyed{Key: "b", Seq: 0})
	e.record(1, "b1", Keyed{Key: "b", Seq: 1})
	e.kill(1)
	e.record(1, "b2", Keyed{Key: "b", Seq: 2}) // by a killed consumer: none
	e.record(2, "b3", Keyed{Key: "b", Seq: 3})

	wrong, seqs := e.wrongOrder()
	assert.Equal(t, 4, wrong, "4 and 5 before 2 and 3")
	assert.Equal(t, map[string][]int{"a": {0, 1, 4, 5, 2, 3}, "b": {0, 1, 3}}, seqs)
	assert.Equal(t, 9, e.count())
	assert.True(t, e.has([]string{"a0", "b3"}))
	assert.False(t, e.has([]string{"b2"}), "a killed consumer's effect")
}

// Groups names, for a topic and its dead letter topic, the groups the
// cases open on it.
func TestGroups(t *testing.T) {
	t.Parallel()
	want := []string{"bustest_x_1_a", "bustest_x_1_b", "bustest_x_1_dead", "bustest_x_1_p"}
	assert.Equal(t, want, Groups("bustest_x_1"))
	assert.Equal(t, want, Groups("bustest_x_1_poison"))
}

// Sever closes what a Severable dialed and refuses to dial again.
func TestSeverable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	var s Severable
	c, err := s.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	server := <-accepted
	require.NotNil(t, server)
	defer server.Close()

	s.Sever()
	_, err = c.Write([]byte("x"))
	assert.ErrorIs(t, err, net.ErrClosed, "the client's side is closed")
	_, err = server.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF, "the broker's side sees the connection drop")
	_, err = s.Dial("tcp", l.Addr().String())
	assert.True(t, errors.Is(err, errSevered), "no dial after Sever: %v", err)
}
