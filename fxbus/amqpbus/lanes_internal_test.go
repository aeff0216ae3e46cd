package amqpbus

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// Two groups' lease names never meet: no topic and group make another's
// prefix, nor start with it.
func TestLeasePrefixesAreApart(t *testing.T) {
	t.Parallel()
	pairs := [][2]string{{"a.b", "c"}, {"a", "b.c"}, {"orders", "svc"}, {"orders", "svc.x"}, {"orders.svc", "x"}}
	for i, a := range pairs {
		for j, b := range pairs {
			if i == j {
				continue
			}
			pa, pb := leasePrefix(a[0], a[1]), leasePrefix(b[0], b[1])
			assert.False(t, strings.HasPrefix(pa, pb), "%v's leases %q are listed under %v's %q", a, pa, b, pb)
		}
	}
}
