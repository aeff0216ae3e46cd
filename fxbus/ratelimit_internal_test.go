package fxbus

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
)

// A budget's name is text a database keeps as it is, whatever the sender
// put in the key: valid UTF-8 without NUL, at most 190 bytes plus the
// hash; two values apart give two names.
func TestBudgetNameIsStorableText(t *testing.T) {
	t.Parallel()
	l := Limit{Per: PerKey}
	long := strings.Repeat("é", 40) // a topic cut past 64 bytes would split a character
	names := map[string]bool{}
	for _, value := range []string{"order-1", "\xff\xfe", "a\x00b", "a\x00c", strings.Repeat("k", 300)} {
		for _, topic := range []string{"orders", long} {
			name := budgetName(topic, "OrderPlaced", l, value)
			assert.True(t, utf8.ValidString(name), "%q", name)
			assert.NotContains(t, name, "\x00")
			assert.LessOrEqual(t, len(name), 190+64)
			assert.False(t, names[name], "two values, one name: %q", name)
			names[name] = true
		}
	}
}
