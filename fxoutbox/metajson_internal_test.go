package fxoutbox

import (
	"encoding/json"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// appendMetadata writes what json.Marshal writes, escapes included.
func TestAppendMetadata(t *testing.T) {
	for _, md := range []map[string]string{
		nil,
		{},
		{"name": "OrderPlaced", "content_type": "application/json", "correlation_id": "c-1"},
		{"q\"uote": "back\\slash", "ctl": "\x00\x01\x1f\b\f\n\r\t", "html": "<a href='x'>&</a>"},
		{"utf8": "héllo wörld ✓ 😀", "bad": "a\xffb\xc3", "seps": "x\u2028y\u2029z"},
		{"a": "1", "b": "2", "c": "3", "d": "4", "e": "5", "f": "6", "g": "7", "h": "8", "i": "9", "j": "10"},
		manyKeys(20), // past the insertion sort
		{"\x7f": "\x7f\x80", "~": "~", " ": " ", "": ""}, // the edges of the plain bytes
	} {
		want, err := json.Marshal(md)
		require.NoError(t, err)
		assert.Equal(t, string(want), string(appendMetadata(nil, md)), "%q", md)
	}
}

func manyKeys(n int) map[string]string {
	md := make(map[string]string, n)
	for i := range n {
		md[strconv.Itoa(n-i)+"k"] = strconv.Itoa(i)
	}
	return md
}

func FuzzAppendMetadata(f *testing.F) {
	f.Add("k", "v", "x\xff\u2028<")
	f.Fuzz(func(t *testing.T, k1, v1, v2 string) {
		md := map[string]string{k1: v1, k1 + "2": v2}
		want, err := json.Marshal(md)
		require.NoError(t, err)
		assert.Equal(t, string(want), string(appendMetadata(nil, md)))
	})
}
