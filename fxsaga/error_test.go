package fxsaga_test

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"testing"

	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// declined is a step's typed error, which callers look for through the
// saga's *Error.
type declined struct{ reason string }

func (d *declined) Error() string { return "declined: " + d.reason }

// failures records an assertion's failure instead of failing the test.
type failures struct{ n int }

func (f *failures) Errorf(string, ...any) { f.n++ }

func TestErrorUnwrap(t *testing.T) {
	t.Parallel()
	stepErr := fmt.Errorf("charge: %w", &declined{reason: "card expired"})
	compErr := errors.New("refund: gateway down")

	t.Run("compensated: the step's error alone, no nil", func(t *testing.T) {
		t.Parallel()
		err := &fxsaga.Error{SagaID: "s1", Step: "Charge", Err: stepErr, Status: fxsaga.Compensated}
		assert.Equal(t, []error{stepErr}, err.Unwrap())
		assert.False(t, slices.Contains(err.Unwrap(), nil), "Unwrap has a nil element")

		var d *declined
		require.ErrorAs(t, err, &d)
		assert.Equal(t, "card expired", d.reason)
		// A failed ErrorAs walks the chain to print it: with a nil in
		// Unwrap's result it panicked on a nil dereference.
		var f failures
		var pathErr *fs.PathError
		assert.NotPanics(t, func() { assert.ErrorAs(&f, err, &pathErr) })
		assert.Equal(t, 1, f.n)
	})

	t.Run("failed: the step's error and the compensation's", func(t *testing.T) {
		t.Parallel()
		err := &fxsaga.Error{SagaID: "s1", Step: "Charge", Err: stepErr, Status: fxsaga.Failed, Compensation: compErr}
		assert.Equal(t, []error{stepErr, compErr}, err.Unwrap())
		assert.ErrorIs(t, err, compErr)
		var d *declined
		assert.ErrorAs(t, err, &d)
	})

	t.Run("nothing to unwrap", func(t *testing.T) {
		t.Parallel()
		assert.Empty(t, (&fxsaga.Error{SagaID: "s1", Status: fxsaga.Compensated}).Unwrap())
	})
}
