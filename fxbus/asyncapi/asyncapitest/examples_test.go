package asyncapitest

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// examples is the repository's examples folder.
const examples = "../../../examples"

// The AsyncAPI document of every example validates. Each example whose
// code uses fxbus writes its services' documents to
// testdata/asyncapi-<service>.json from its buses, and fails when they
// drift (its TestContract); here they meet the AsyncAPI 3.0 schema, which
// the examples' modules need not depend on. An example that uses fxbus
// without a document fails, so a new one cannot be forgotten.
func TestExamplesValidate(t *testing.T) {
	dirs, err := os.ReadDir(examples)
	require.NoError(t, err)
	schema := validator(t)
	documented := 0
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		dir := filepath.Join(examples, d.Name())
		docs, err := filepath.Glob(filepath.Join(dir, "testdata", "asyncapi-*.json"))
		require.NoError(t, err)
		if !usesBus(t, dir) {
			assert.Empty(t, docs, "%s: documents, but no bus", dir)
			continue
		}
		if !assert.NotEmpty(t, docs, "%s uses fxbus but has no testdata/asyncapi-*.json: give it a TestContract", dir) {
			continue
		}
		for _, path := range docs {
			t.Run(d.Name()+"/"+filepath.Base(path), func(t *testing.T) {
				doc, err := os.ReadFile(path)
				require.NoError(t, err)
				validate(t, schema, doc)
			})
			documented++
		}
	}
	assert.GreaterOrEqual(t, documented, 9, "bus, outbox, saga and kafka have two services each, durable one")
}

// usesBus reports whether the example's program imports fxbus.
func usesBus(t *testing.T, dir string) bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	require.NoError(t, err)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		require.NoError(t, err)
		if bytes.Contains(src, []byte(`"github.com/fxcqrs/fxcqrs/fxbus"`)) {
			return true
		}
	}
	return false
}
