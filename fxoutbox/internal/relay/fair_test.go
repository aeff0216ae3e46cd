package relay

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// A batch shared between tenants gives each its turn at every place,
// takes the rest from those that have more, and each tenant's pick is its
// first rows.
func TestSharesGiveEachTenantItsTurn(t *testing.T) {
	t.Parallel()
	c := func(id int64, tenant string) candidate { return candidate{row: row{id: id}, tenant: tenant} }
	var rows []candidate
	for id := int64(1); id <= 50; id++ { // a noisy tenant's backlog
		rows = append(rows, c(id, "noisy"))
	}
	rows = append(rows, c(60, "a"), c(61, "b"), c(62, "a"))
	ids := func(cs []candidate) []int64 {
		out := make([]int64, len(cs))
		for i, c := range cs {
			out[i] = c.id
		}
		return out
	}

	assert.Equal(t, []int64{1, 2, 3, 4, 60, 61, 62}, ids(shares(rows, 7)), "a's two rows, b's one, the rest the backlog's first")
	assert.Equal(t, []int64{1, 60, 61}, ids(shares(rows, 3)), "each tenant's first row")
	assert.Equal(t, []int64{1, 2, 60, 61}, ids(shares(rows, 4)), "the second round in id order")
	assert.Len(t, shares(rows, 100), 53, "everything, when the batch holds it")
	assert.Empty(t, shares(nil, 10))
}
