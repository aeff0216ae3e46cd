package fxsaga

import (
	"fmt"
	"reflect"
)

// ContextUpcaster turns a saga's stored context of version From into
// version From+1 (see Saga.Version). Up works on the context's JSON and
// must not keep or change the slice it is given.
type ContextUpcaster struct {
	// From is the version Up reads; it writes From+1. From 1.
	From int
	// Up returns the context of version From+1.
	Up func(context []byte) ([]byte, error)
}

// contextVersions is a definition's context version and its upcasters.
type contextVersions struct {
	current int                                    // 0: undeclared, version 1
	oldest  int                                    // the oldest version ups reach current from
	ups     []func(context []byte) ([]byte, error) // ups[i] reads version oldest+i
}

// Version declares that the saga's context type C is version n of its
// stored shape, with the upcasters that bring a context stored by older
// code to it, one per version (From 1, 2, …, n-1; a chain may start later
// once no older saga is stored). A saga stored before versions existed
// has version 1. A waiting, running or compensating saga's stored context
// is upcast before its shape check, so that a field renamed while it
// waited does not set it aside; one no chain reaches, or newer than n (a
// replica already upgraded stored it: upgrade every replica of a service
// before it starts sagas of the new version), is set aside with the
// reason, which names C and both versions. A version below 1, a gap, or
// two upcasters from one version is the definition's error, which
// Register turns into fx.New's. It returns s:
//
//	fxsaga.Define[Booking]("booking", hold, pay).Version(2, fxsaga.ContextUpcaster{From: 1, Up: renameGuest})
func (s *Saga[C]) Version(n int, ups ...ContextUpcaster) *Saga[C] {
	if s.err != nil {
		return s
	}
	fail := func(format string, args ...any) *Saga[C] {
		s.err = fmt.Errorf("fxsaga.Define(%q).Version: "+format, append([]any{s.name}, args...)...)
		return s
	}
	if n < 1 {
		return fail("versions start at 1: got %d", n)
	}
	byFrom := map[int]ContextUpcaster{}
	oldest := n
	for _, u := range ups {
		switch {
		case u.Up == nil:
			return fail("the upcaster from version %d has a nil Up", u.From)
		case u.From < 1 || u.From >= n:
			return fail("an upcaster from version %d: the context is version %d, so upcasters read versions 1 to %d", u.From, n, n-1)
		}
		if _, dup := byFrom[u.From]; dup {
			return fail("two upcasters from version %d", u.From)
		}
		byFrom[u.From] = u
		oldest = min(oldest, u.From)
	}
	v := contextVersions{current: n, oldest: oldest}
	for from := oldest; from < n; from++ {
		u, ok := byFrom[from]
		if !ok {
			return fail("the chain from version %d to %d has no upcaster from version %d", oldest, n, from)
		}
		v.ups = append(v.ups, u.Up)
	}
	s.versions = v
	return s
}

// contextVersion is the version of the definition's context: 1 unless
// declared.
func (s *Saga[C]) contextVersion() int { return max(s.versions.current, 1) }

// contextReaches is "" when a stored context of version v can be brought
// to the definition's version, else the reason it cannot.
func (s *Saga[C]) contextReaches(v int) string {
	v, current := max(v, 1), s.contextVersion()
	oldest := current
	if len(s.versions.ups) > 0 {
		oldest = s.versions.oldest
	}
	switch {
	case v > current:
		return fmt.Sprintf("its stored context is version %d of %v, newer than this definition's version %d: upgrade every replica before it starts sagas of the new version",
			v, reflect.TypeFor[C](), current)
	case v < oldest:
		return fmt.Sprintf("its stored context is version %d of %v, which no upcaster brings to version %d: register an fxsaga.ContextUpcaster from version %d",
			v, reflect.TypeFor[C](), current, v)
	}
	return ""
}

// fit brings st's stored context to the definition's version, then checks
// st against the definition: st as it is to be driven, and the reason it
// is set aside ("" when it fits). A context it cannot upcast is left as
// it was stored.
func (s *Saga[C]) fit(st State) (State, string) {
	v, current := max(st.ContextVersion, 1), s.contextVersion()
	if v != current {
		if reason := s.contextReaches(v); reason != "" {
			return st, reason
		}
		data := []byte(st.Context)
		for from := v; from < current; from++ {
			next, err := s.versions.ups[from-s.versions.oldest](data)
			if err != nil {
				return st, fmt.Sprintf("its stored context of version %d of %v cannot be upcast to version %d: %v", from, reflect.TypeFor[C](), from+1, err)
			}
			data = next
		}
		st.Context, st.ContextVersion = data, current
	}
	return st, s.misfit(st)
}
