package engine

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

// Events of the inline tests: a level's, and the follow-ups its handlers
// emit.
type (
	evA      struct{ N int }
	evB      struct{ N int }
	evFollow struct{ From string }
)

// step is an event handler that records its run, emits a follow-up, and
// then fails, panics or returns, as told.
type step[E any] struct {
	name    string
	log     *runLog
	emit    bool
	panics  any
	failure error
}

func (s *step[E]) Handle(ctx context.Context, _ E) error {
	s.log.add(s.name)
	if s.emit {
		Emit(FrameOf(ctx), evFollow{From: s.name})
	}
	if s.panics != nil {
		panic(s.panics)
	}
	return s.failure
}

type follower struct{ log *runLog }

func (f *follower) Handle(_ context.Context, ev evFollow) error {
	f.log.add("follow " + ev.From)
	return nil
}

type runLog struct {
	mu  sync.Mutex
	ran []string
}

func (l *runLog) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ran = append(l.ran, s)
}

func newInlineEngine(t *testing.T, forward func(context.Context, []Record) error, handlers map[reflect.Type][]*Handler) *Engine {
	t.Helper()
	e := new(Engine)
	e.Init(Config{
		Log:          zap.NewNop(),
		Events:       Mode{Limit: 1, Sequential: true},
		StreamEvents: Mode{Limit: 1, Sequential: true},
		Forward:      forward,
	})
	e.SetHandlers(handlers, nil, nil)
	return e
}

// The inline mode recovers a handler's panic once per level, not once per
// invocation: a panic cuts the level's loop short and it goes on from the
// next invocation. Whatever the panic's place in the level, every other
// invocation runs once, in order, the panicking one's follow-ups are
// dropped with it, the others' run in the next level, and each panic is the
// failure of its own invocation, with its handler, event and stack.
func TestInlineRecoversEachPanicAndGoesOn(t *testing.T) {
	log := new(runLog)
	a1 := &step[evA]{name: "a1", log: log, emit: true}
	a2 := &step[evA]{name: "a2", log: log, emit: true, panics: "a2 exploded"}
	a3 := &step[evA]{name: "a3", log: log, emit: true}
	b1 := &step[evB]{name: "b1", log: log, panics: "b1 exploded"}
	b2 := &step[evB]{name: "b2", log: log, failure: errors.New("b2 failed")}
	handler := func(v any, name string) *Handler { return &Handler{Value: v, Name: name} }
	hs := map[reflect.Type][]*Handler{
		reflect.TypeFor[evA]():      {handler(a1, "a1"), handler(a2, "a2"), handler(a3, "a3")},
		reflect.TypeFor[evB]():      {handler(b2, "b2"), handler(b1, "b1")},
		reflect.TypeFor[evFollow](): {handler(&follower{log: log}, "follower")},
	}
	e := newInlineEngine(t, nil, hs)

	// b1's panic is the level's last invocation.
	fails := e.runInline(context.Background(), 0, []Record{recordOf(evA{N: 1}), recordOf(evA{N: 3}), recordOf(evB{N: 2})})

	assert.Equal(t, []string{
		"a1", "a2", "a3", // evA{1}
		"a1", "a2", "a3", // evA{3}
		"b2", "b1", // evB{2}
		"follow a1", "follow a3", "follow a1", "follow a3", // not a2's
	}, log.ran)

	type got struct {
		handler string
		event   any
		panic   any
		err     string
	}
	var gots []got
	for _, f := range fails {
		g := got{handler: f.Handler.Name, event: f.Event}
		var p *Panic
		if errors.As(f.Err, &p) {
			g.panic = p.Value
			assert.True(t, strings.Contains(string(p.Stack), "engine.(*step["), "the stack is the panicking handler's:\n%s", p.Stack)
		} else {
			g.err = f.Err.Error()
		}
		assert.True(t, f.Started, "%s started", f.Handler.Name)
		gots = append(gots, g)
	}
	assert.Equal(t, []got{
		{handler: "a2", event: evA{N: 1}, panic: "a2 exploded"},
		{handler: "a2", event: evA{N: 3}, panic: "a2 exploded"},
		{handler: "b2", event: evB{N: 2}, err: "b2 failed"},
		{handler: "b1", event: evB{N: 2}, panic: "b1 exploded"},
	}, gots)
}

// A panic that is no handler's (here the Forward hook's) is not taken for a
// handler's failure: it goes on up to the caller, as it always did.
func TestInlineLetsOtherPanicsThrough(t *testing.T) {
	log := new(runLog)
	hs := map[reflect.Type][]*Handler{
		reflect.TypeFor[evA]():      {{Value: &step[evA]{name: "a", log: log, emit: true}, Name: "a"}},
		reflect.TypeFor[evFollow](): {{Value: &follower{log: log}, Name: "follower"}},
	}
	e := newInlineEngine(t, func(context.Context, []Record) error { panic("forwarding exploded") }, hs)
	require.PanicsWithValue(t, "forwarding exploded", func() {
		e.runInline(context.Background(), 0, []Record{recordOf(evA{N: 1})})
	})
	assert.Equal(t, []string{"a"}, log.ran)
}

// recordOf records a copy of ev, by its static type.
func recordOf[E any](ev E) Record {
	rec, _ := RecordOf(&ev)
	return rec
}
