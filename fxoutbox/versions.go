package fxoutbox

import (
	"context"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/admin"
	"go.uber.org/zap"
)

// StoredVersion is how many messages of one event name and version one of
// the outbox's tables holds (see Admin.Versions).
type StoredVersion = admin.StoredVersion

// UnreachableVersion is stored messages a service cannot read: Reason is
// the *fxbus.VersionError that each of them is dead-lettered with when it
// is read.
type UnreachableVersion struct {
	StoredVersion
	// Reason is why they cannot be read.
	Reason error
}

// UnreachableVersions lists the event names and versions a's tables hold
// that bus cannot read: older than every upcaster chain of their name
// reaches, newer than the type bus has, or not a version at all. It reads
// the indexed columns (Admin.Versions), never a payload. Outbox.Start logs
// them.
func UnreachableVersions(ctx context.Context, a *Admin, bus *fxbus.Bus) ([]UnreachableVersion, error) {
	stored, err := a.Versions(ctx)
	if err != nil {
		return nil, err
	}
	var out []UnreachableVersion
	for _, v := range stored {
		if v.Name == "" {
			continue // nameless: no type, no chain
		}
		if err := bus.Reaches(v.Name, v.Version); err != nil {
			out = append(out, UnreachableVersion{StoredVersion: v, Reason: err})
		}
	}
	return out, nil
}

// checkVersions logs, at error level, what the outbox's tables hold that
// no upcaster chain brings to the current types: the relay dead-letters
// each such message with its reason as it reaches it, and nothing is
// decoded wrong, but an operator should hear of it at the deploy, not at
// the first dead letter.
func (o *Outbox) checkVersions(ctx context.Context) error {
	bad, err := UnreachableVersions(ctx, o.admin, o.local.bus)
	if err != nil {
		return err
	}
	for _, v := range bad {
		o.local.log.Error("stored messages no upcaster chain reaches: each is dead-lettered with this reason when it is read; register the missing fxbus.Upcaster, or repair them",
			zap.String("table", v.Table), zap.String("name", v.Name), zap.Int("version", v.Version), zap.Int64("rows", v.Rows), zap.Error(v.Reason))
	}
	return nil
}
