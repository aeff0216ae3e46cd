package fxconsole_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxconsole"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// A dead letter's protobuf payload is shown decoded when its type is
// registered, and as a hex dump when not.
func TestLetterShowsBinaryPayloads(t *testing.T) {
	t.Parallel()
	d := outboxtest.Open(t, fxoutbox.SQLite)
	pb, err := proto.Marshal(wrapperspb.String("fragile"))
	require.NoError(t, err)
	for id, row := range map[int]struct {
		payload  []byte
		metadata string
	}{
		1: {pb, `{"name":"StringValue","content_type":"application/protobuf"}`},
		2: {[]byte{0xff, 0x00, 0x01}, `{"name":"Unknown","content_type":"application/protobuf"}`},
	} {
		_, err := d.DB.Exec("INSERT INTO fxcqrs_outbox_dead (id, topic, message_id, payload, metadata, error, failed_ns) VALUES (?, 'labels', 'm', ?, ?, 'refused', ?)",
			id, row.payload, row.metadata, time.Now().UnixNano())
		require.NoError(t, err)
	}
	admin, err := fxoutbox.NewAdmin(d.DB, d.Dialect, fxoutbox.Tables{}, nil)
	require.NoError(t, err)
	c, err := fxconsole.New(admin, nil, fxconsole.Config{Authorize: func(*http.Request) bool { return true }})
	require.NoError(t, err)
	_, body := get(t, c, "/dead/1")
	assert.Contains(t, body, `<pre id="payload">&#34;fragile&#34;</pre>`)
	_, body = get(t, c, "/dead/2")
	assert.Contains(t, body, "00000000  ff 00 01")
}
