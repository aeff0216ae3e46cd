// Package benchmarks measures fxcqrs against the baselines a user would
// otherwise write (a direct call, an errgroup fan-out, ranging over an
// iterator) and against Watermill's components/cqrs. It is a module of its
// own so that its dependencies never reach fxcqrs's users.
//
// `make bench-figures SUITES=mediator` runs it in rounds into
// results/mediator.txt, from which the performance page's figures are
// computed (https://github.com/fxcqrs/fxcqrs/blob/main/docs/performance.md#the-mediator).
package benchmarks
