// Package deadline shares fx's stop deadline among the modules that stop
// one after another: fx gives every OnStop hook the same context and runs
// no later hook once it is done, so a module that spent the whole
// deadline would leave the ones after it unstopped.
package deadline

import (
	"context"
	"time"
)

// Share returns ctx cut to the first frac of the time it has left (all of
// it when frac is 1 or more, or when ctx has no deadline).
func Share(ctx context.Context, frac float64) (context.Context, context.CancelFunc) {
	d, ok := ctx.Deadline()
	if !ok || frac >= 1 {
		return context.WithCancel(ctx)
	}
	left := time.Until(d)
	return context.WithTimeout(ctx, time.Duration(float64(left)*frac))
}
