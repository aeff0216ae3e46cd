package sqlschema

import (
	"strings"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCheckNames(t *testing.T) {
	t.Parallel()
	require.NoError(t, CheckNames("m", "a", "_b9", strings.Repeat("x", MaxName)))
	err := CheckNames("m", "ok", "9x", "a; DROP TABLE t", strings.Repeat("x", MaxName+1))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `m: table names must be SQL identifiers`)
	assert.Contains(t, err.Error(), `"9x"`)
	assert.Contains(t, err.Error(), `"a; DROP TABLE t"`)
	assert.NotContains(t, err.Error(), `"ok"`)
}

func TestRender(t *testing.T) {
	t.Parallel()
	fsys := fstest.MapFS{"s.sql": {Data: []byte("CREATE TABLE {{.T}} (id INT);")}}
	got, err := Render(fsys, "s.sql", map[string]string{"T": Quote(true, "x")})
	require.NoError(t, err)
	assert.Equal(t, "CREATE TABLE `x` (id INT);", got)
	_, err = Render(fsys, "s.sql", map[string]string{})
	require.Error(t, err, "a name the template needs and nobody gave")
}

func TestStripCommentsKeepsStatementsWhole(t *testing.T) {
	t.Parallel()
	parts := strings.Split(stripComments("-- a comment; with a semicolon\nCREATE TABLE t (id INT);\nSELECT 1"), ";")
	require.Len(t, parts, 2)
	assert.Equal(t, "CREATE TABLE t (id INT)", strings.TrimSpace(parts[0]))
}

func TestStripComments(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "", strings.TrimSpace(stripComments("-- only\n  -- comments\n")))
	assert.Contains(t, stripComments("-- c\nSELECT 1"), "SELECT 1")
}
