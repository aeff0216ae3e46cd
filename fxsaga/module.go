package fxsaga

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/internal/deadline"
	"go.uber.org/fx"
	"go.uber.org/zap"
)

// Module runs sagas under fx. It takes a Store and an optional
// Config from the graph, with the mediator of fxcqrs.Module,
// registers StepHandler, and provides the *Runner. Its lifecycle recovers
// the sagas registered with Register: at start, then every
// RecoveryInterval, in the background; Stop ends recovery and waits, within
// its deadline, for the saga in hand, leaving the rest consistent for the
// next recovery.
//
// It also registers what times waiting sagas out (Await): the
// DeadlineHandler, and Deadline as an fxoutbox.ScheduledCommand, which the
// outbox module delivers at each deadline. Each event type a saga waits
// for needs a Resume of its own.
var Module = fx.Module("fxsaga",
	fxcqrs.AsCommandHandler(func() StepHandler { return StepHandler{} }),
	fxcqrs.AsCommandHandler(func(r *Runner) *DeadlineHandler { return &DeadlineHandler{binding{r}} }),
	fxoutbox.Schedulable[Deadline](),
	fx.Provide(provideRunner, newRecovery),
	fxcqrs.AsChecks(checks),
	fx.Invoke(startRecovery),
)

// recovery is what the module's recovery loop did last, for its health
// check.
type recovery struct {
	mu       sync.Mutex
	now      func() time.Time
	interval time.Duration
	started  time.Time // when the loop began, zero before
	passed   time.Time // when it last finished a pass over every saga
}

type recoveryStateParams struct {
	fx.In

	Runner *Runner
	Config Config `optional:"true"`
}

func newRecovery(p recoveryStateParams) *recovery {
	r, cfg := p.Runner, p.Config
	interval := cfg.RecoveryInterval
	if interval <= 0 {
		interval = 30 * time.Second
	}
	return &recovery{now: r.now, interval: interval}
}

func (rc *recovery) began() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.started = rc.now()
}

func (rc *recovery) pass() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.passed = rc.now()
}

// checks are the module's health checks: fxsaga.schema, liveness, when
// the store can check its schema (SQL: one read of its migrations
// table), and fxsaga.recovery.
func checks(rc *recovery, store Store) []fxcqrs.Check {
	cs := []fxcqrs.Check{rc.check()}
	if c, ok := store.(interface{ CheckSchema(context.Context) error }); ok {
		cs = append(cs, fxcqrs.Check{Name: "fxsaga.schema", Run: c.CheckSchema})
	}
	return cs
}

// check is fxsaga.recovery, readiness: recovery finished a pass within
// three of its intervals (a pass stuck on a saga, or a store that does
// not answer, fails it). In-memory: it costs a lock.
func (rc *recovery) check() fxcqrs.Check {
	return fxcqrs.Check{Name: "fxsaga.recovery", Readiness: true, Run: func(context.Context) error {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		last := rc.passed
		if last.IsZero() {
			last = rc.started
		}
		if last.IsZero() {
			return nil // not started: the application's start reports that
		}
		if since := rc.now().Sub(last); since > 3*rc.interval {
			return fmt.Errorf("saga recovery has not finished a pass for %v (RecoveryInterval %v)", since, rc.interval)
		}
		return nil
	}}
}

// resumed is an event type a Resume resumes sagas on.
type resumed struct{ t reflect.Type }

// Resume registers the Resumer of event type E with the mediator: an E
// that arrives, through an fxbus.Subscribe of another service's topic or
// emitted in this process, resumes the sagas waiting for it (see Await).
// A saga registered with Register that waits for an E without a Resume
// fails fx.New, saying so.
func Resume[E any]() fx.Option {
	return fx.Options(
		fxcqrs.AsEventHandler(func(r *Runner) *Resumer[E] { return &Resumer[E]{binding{r}} }),
		fx.Provide(fx.Annotate(func() resumed { return resumed{reflect.TypeFor[E]()} }, fx.ResultTags(`group:"fxsaga.resumed"`))),
	)
}

// Config configures Module. Every field is optional.
type Config struct {
	// Runner configures the runner.
	Runner RunnerConfig `json:"runner" yaml:"runner"`
	// RecoveryInterval is how often unfinished sagas are looked for.
	// Default 30s.
	RecoveryInterval time.Duration `json:"recoveryInterval" yaml:"recoveryInterval"`
}

func (s *Saga[C]) definitionError() error { return s.err }

func (s *Saga[C]) recoverWith(ctx context.Context, r *Runner) error { return Recover(ctx, r, s) }

// Register provides a saga definition to fx: constructor returns a
// *Saga[C] (its steps are its dependencies), which handlers can inject to
// Run, and which Module recovers.
func Register[C any](constructor any) fx.Option {
	return fx.Options(
		fx.Provide(constructor),
		fx.Provide(fx.Annotate(func(s *Saga[C]) Definition { return s }, fx.ResultTags(`group:"fxsaga.sagas"`))),
	)
}

type runnerParams struct {
	fx.In

	Mediator *fxcqrs.Mediator
	Store    Store
	Config   Config          `optional:"true"`
	Logger   *zap.Logger     `optional:"true"`
	Observer fxcqrs.Observer `optional:"true"`
}

func provideRunner(p runnerParams) *Runner {
	cfg := p.Config.Runner
	if cfg.Observer == nil {
		cfg.Observer = p.Observer
	}
	return NewRunner(p.Mediator, p.Store, cfg, p.Logger)
}

type recoveryParams struct {
	fx.In

	Lifecycle fx.Lifecycle
	Runner    *Runner
	Store     Store
	Config    Config      `optional:"true"`
	Logger    *zap.Logger `optional:"true"`
	Sagas     []Definition `group:"fxsaga.sagas"`
	Resumed   []resumed   `group:"fxsaga.resumed"`
	Recovery  *recovery
}

func startRecovery(p recoveryParams) error {
	names := map[string]bool{}
	for _, s := range p.Sagas {
		if err := s.definitionError(); err != nil {
			return err
		}
		if names[s.Name()] {
			return fmt.Errorf("fxsaga: two sagas are named %q", s.Name())
		}
		names[s.Name()] = true
	}
	if err := p.Runner.Add(p.Sagas...); err != nil {
		return err
	}
	resumes := map[reflect.Type]bool{}
	for _, r := range p.Resumed {
		resumes[r.t] = true
	}
	slices.SortFunc(p.Sagas, func(a, b Definition) int { return strings.Compare(a.Name(), b.Name()) })
	var missing []error
	for _, s := range p.Sagas {
		for _, t := range s.awaited() {
			if !resumes[t] {
				missing = append(missing, fmt.Errorf("fxsaga: saga %s waits for %v, but nothing resumes it: add fxsaga.Resume[%v]() to the application", s.Name(), t, t))
			}
		}
	}
	if err := errors.Join(missing...); err != nil {
		return err
	}
	interval := p.Config.RecoveryInterval
	if interval <= 0 {
		interval = 30 * time.Second
	}
	checker, _ := p.Store.(interface{ CheckSchema(context.Context) error })
	log := p.Logger
	if log == nil {
		log = zap.NewNop()
	}
	log = log.Named("fxsaga")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	p.Lifecycle.Append(fx.Hook{
		OnStart: func(start context.Context) error {
			if checker != nil {
				if err := checker.CheckSchema(start); err != nil {
					return err
				}
			}
			p.Recovery.began()
			go func() {
				defer close(done)
				for {
					for _, s := range p.Sagas {
						switch err := recoverSafely(ctx, s, p.Runner); {
						case err == nil, errors.Is(err, context.Canceled):
						case errors.Is(err, ErrFenced):
							// Another replica took a saga over: it drives it now.
							log.Info("saga recovery: a saga was taken over", zap.String("saga", s.Name()), zap.Error(err))
						default:
							log.Error("saga recovery", zap.String("saga", s.Name()), zap.Error(err))
						}
					}
					p.Recovery.pass()
					select {
					case <-ctx.Done():
						return
					case <-time.After(interval):
					}
				}
			}()
			return nil
		},
		OnStop: func(stop context.Context) error {
			// A third of the stop deadline: the mediator and the relay stop
			// after it and need theirs.
			stop, cancelShare := deadline.Share(stop, 1.0/3)
			defer cancelShare()
			cancel()
			select {
			case <-done:
				return nil
			case <-stop.Done():
				return fmt.Errorf("fxsaga: recovery still running: %w", stop.Err())
			}
		},
	})
	return nil
}

// recoverSafely recovers s, a panic included: recovery runs on a goroutine
// of its own, where a panic would take the process down, at every restart.
func recoverSafely(ctx context.Context, s Definition, r *Runner) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("fxsaga: recovering saga %s panicked: %v\n%s", s.Name(), v, debug.Stack())
		}
	}()
	return s.recoverWith(ctx, r)
}
