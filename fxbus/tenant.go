package fxbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Tenants: one service serving many customers keeps each one's work apart
// by a tenant id that travels with the work. The edge sets it on the
// context ([WithTenant], [TenantHandler]); every message made under that
// context carries it in its [MetadataTenant] metadata (a route's, a row
// of the outbox, a durable event, a schedule, a dead letter: each stores
// the metadata); the handler of a message reads it again ([TenantOf]), and
// the events it emits carry it on, as they carry the correlation id.
//
// A tenant in incoming metadata is untrusted: a subscription hands it to
// the application's [Tenants] (Config.Tenants) and handles the message
// under the tenant that gives back, or dead-letters it at once, unhandled,
// with the reason (errors.Is reports [ErrUnknownTenant]). A message
// without the metadata belongs to the default tenant, "", as everything
// stored before tenants existed does.

// MaxTenantIDLength is the length, in bytes, above which a tenant id in
// incoming metadata is refused before the application's [Tenants] is
// asked.
const MaxTenantIDLength = 128

// ErrUnknownTenant is the reason a subscription dead-letters a message
// whose tenant ([MetadataTenant]) is not one the bus knows: errors.Is
// reports it for the error a DeadLetterRecorder is given, and the dead
// letter's reason (Watermill's "reason_poisoned" metadata) starts with
// "unknown tenant". A [Tenants] says a tenant is unknown by returning an
// error that wraps it.
var ErrUnknownTenant = errors.New("unknown tenant")

// Tenants maps a tenant id that arrived in a message's metadata, which
// anyone able to publish to a topic could have written, to a tenant the
// application knows. Set it as Config.Tenants: [StaticTenants] for a fixed
// list, [TenantsFunc] for a callback (a lookup in a table, say).
type Tenants interface {
	// Resolve returns the id of the known tenant id names: id itself, or
	// its canonical form. An error that wraps [ErrUnknownTenant]
	// dead-letters the message at once; any other error (the tenants'
	// table cannot be read) fails the attempt, which is retried as a
	// failing handler is. Resolve is called before each attempt, with an
	// id that is not empty, valid UTF-8 without control characters, and
	// at most [MaxTenantIDLength] bytes long; returning "" hands the
	// message to the default tenant.
	Resolve(ctx context.Context, id string) (string, error)
}

// TenantsFunc is a [Tenants] of a function.
type TenantsFunc func(ctx context.Context, id string) (string, error)

// Resolve returns f(ctx, id).
func (f TenantsFunc) Resolve(ctx context.Context, id string) (string, error) { return f(ctx, id) }

// StaticTenants returns the [Tenants] that knows ids and nothing else: an
// id is resolved to itself when it is one of them, byte for byte.
func StaticTenants(ids ...string) Tenants {
	known := slices.Clone(ids)
	return TenantsFunc(func(_ context.Context, id string) (string, error) {
		if slices.Contains(known, id) {
			return id, nil
		}
		return "", fmt.Errorf("%w: not one of the %d known", ErrUnknownTenant, len(known))
	})
}

// tenantKey is the context key of the tenant a call works for.
type tenantKey struct{}

// WithTenant returns ctx under which the work is the tenant id's: the
// handlers of a call made with it read it with [TenantOf], and every
// message made under it carries it ([MetadataTenant]) to the handlers of
// the message, wherever and whenever they run. id must come from a source
// the application trusts (its authentication, not a request's header);
// "" is the default tenant.
func WithTenant(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, tenantKey{}, id)
}

// TenantOf returns the tenant ctx works for: the one [WithTenant] gave it,
// or the one a subscription resolved for the message being handled; ""
// (the default tenant) when there is none.
func TenantOf(ctx context.Context) string {
	id, _ := ctx.Value(tenantKey{}).(string)
	return id
}

// unknownTenant is the error of a message whose tenant the bus does not
// know.
type unknownTenant struct {
	id  string
	err error
}

func (e *unknownTenant) Error() string {
	why := strings.TrimPrefix(strings.TrimPrefix(e.err.Error(), ErrUnknownTenant.Error()), ": ")
	if why == "" {
		return "unknown tenant " + showTenant(e.id)
	}
	return "unknown tenant " + showTenant(e.id) + ": " + why
}

func (e *unknownTenant) Is(target error) bool { return target == ErrUnknownTenant }
func (e *unknownTenant) Unwrap() error        { return e.err }

// showTenant quotes an untrusted tenant id for an error, a log or a dead
// letter's reason: escaped, and cut short when it is long.
func showTenant(id string) string {
	const shown = 64
	if len(id) <= shown {
		return fmt.Sprintf("%q", id)
	}
	return fmt.Sprintf("%q… (%d bytes)", id[:shown], len(id))
}

// checkTenantID reports what makes id, from incoming metadata, no tenant
// id at all: nil for one Tenants may be asked about.
func checkTenantID(id string) error {
	switch {
	case id == "":
		return errors.New("empty (a message of the default tenant has no tenant metadata)")
	case len(id) > MaxTenantIDLength:
		return fmt.Errorf("longer than %d bytes", MaxTenantIDLength)
	case !utf8.ValidString(id):
		return errors.New("not valid UTF-8")
	case slices.ContainsFunc([]rune(id), unicode.IsControl):
		return errors.New("contains control characters")
	}
	return nil
}

// resolveTenant is a subscription's check before each attempt at msg: the
// known tenant msg belongs to ("" without tenant metadata), or the error
// that dead-letters it (an unknownTenant) or fails the attempt (Tenants
// could not tell).
func (b *Bus) resolveTenant(ctx context.Context, msg *message.Message) (string, error) {
	id, ok := msg.Metadata[MetadataTenant]
	if !ok {
		return "", nil
	}
	if err := checkTenantID(id); err != nil {
		return "", &unknownTenant{id: id, err: err}
	}
	if b.cfg.Tenants == nil {
		return "", &unknownTenant{id: id, err: errors.New("the bus knows no tenants (fxbus.Config.Tenants)")}
	}
	known, err := b.cfg.Tenants.Resolve(ctx, id)
	switch {
	case errors.Is(err, ErrUnknownTenant):
		return "", &unknownTenant{id: id, err: err}
	case err != nil:
		return "", fmt.Errorf("fxbus: resolve tenant %s: %w", showTenant(id), err)
	}
	return known, nil
}
