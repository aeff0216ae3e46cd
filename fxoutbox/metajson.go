package fxoutbox

import (
	"slices"
	"strings"
	"unicode/utf8"
)

// appendMetadata appends md as JSON to b, byte for byte what
// encoding/json.Marshal writes for it (keys sorted, strings escaped as it
// escapes them, HTML characters included), without its reflection: the
// unit of work writes a row's metadata per routed event, and
// json.Marshal's map encoder was a fifth of a command's allocations.
func appendMetadata(b []byte, md map[string]string) []byte {
	if md == nil {
		return append(b, "null"...)
	}
	// The pairs are taken with their values, so that writing them looks
	// nothing up in the map again.
	var buf [8]metadataPair
	pairs := buf[:0]
	for k, v := range md {
		pairs = append(pairs, metadataPair{k, v})
	}
	sortPairs(pairs)
	b = append(b, '{')
	for i, p := range pairs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, p.k)
		b = append(b, ':')
		b = appendJSONString(b, p.v)
	}
	return append(b, '}')
}

type metadataPair struct{ k, v string }

// sortPairs sorts pairs by key. A message has a handful of metadata keys,
// which an insertion sort orders with fewer steps than a general sort.
func sortPairs(pairs []metadataPair) {
	if len(pairs) > 12 {
		slices.SortFunc(pairs, func(a, b metadataPair) int { return strings.Compare(a.k, b.k) })
		return
	}
	for i := 1; i < len(pairs); i++ {
		for j := i; j > 0 && pairs[j].k < pairs[j-1].k; j-- {
			pairs[j], pairs[j-1] = pairs[j-1], pairs[j]
		}
	}
}

const hexDigits = "0123456789abcdef"

// jsonPlain holds the bytes appendJSONString copies as they are: the
// ASCII characters that encoding/json does not escape. One table look-up
// per byte instead of six comparisons: metadata is mostly such bytes.
var jsonPlain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// appendJSONString appends s as a JSON string, escaped as encoding/json
// escapes it with its default HTML escaping: invalid UTF-8 becomes
// U+FFFD, U+2028 and U+2029 are escaped.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		// Plain bytes four at a time while they last, then one at a time.
		for ; i+4 <= len(s); i += 4 {
			if q := s[i : i+4]; !jsonPlain[q[0]] || !jsonPlain[q[1]] || !jsonPlain[q[2]] || !jsonPlain[q[3]] {
				break
			}
		}
		if i == len(s) {
			break
		}
		c := s[i]
		if jsonPlain[c] {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default: // other control characters, and <, >, &
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
