// Package benchmarks measures fxcqrs against the baselines a user would
// otherwise write (a direct call, an errgroup fan-out, ranging over an
// iterator) and against Watermill's components/cqrs. It is a module of its
// own so that its dependencies never reach fxcqrs's users.
//
//	go test -run '^$' -bench . -benchmem -count 5 | tee bench.out
//	go run golang.org/x/perf/cmd/benchstat@latest bench.out
package benchmarks
