#!/usr/bin/env bash
# Runs the benchmarks that the pages' figures come from and writes their
# raw output, one file a suite, to benchmarks/results/<suite>.txt; docs/
# computes the figures from those files (`cd docs && go test -run
# TestFigures -update` rewrites the pages, `go test ./...` fails while a
# page and the files disagree). Used by `make bench-figures`.
#
#	benchmarks/figures.sh [suite...]    # all suites when none is named
#
# Each suite runs ROUNDS times (default 6, 3 for the suites on servers,
# whose rounds take minutes), one `-count 1` a round, so
# that the benchmarks a ratio compares alternate through the run and what
# the machine does in a given minute falls on both sides: a ratio is
# computed round by round, within one file. The files keep go test's
# output as it is (benchstat reads them too), after three lines of ours:
# the command of each round, the rounds, the date.
#
# Suites that need servers set FXCQRS_REQUIRE_SERVICES=1, so that a
# missing server fails the run instead of writing a file with no results.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
all=(mediator root otel brokers versions interop outbox durable saga relay kafka)

# suite NAME prints one line per go test invocation of a round:
# the directory (from the repository's root), then the arguments.
suite() {
	case $1 in
	mediator) echo "benchmarks -bench . -benchmem" ;;
	root)
		echo ". -bench SendMiddleware|ExecObserved|SendGuarded -benchmem"
		echo "internal/typekey -bench TypeTable -benchmem"
		;;
	otel) echo "fxcqrsotel/otelbus -bench RoutedEvent -benchmem" ;;
	versions) echo "fxbus -bench Upcast -benchmem -benchtime 0.5s" ;;
	interop) echo "fxbus/protobuf -bench Routed -benchmem -benchtime 20000x" ;;
	brokers)
		echo "fxbus -bench EndToEnd -benchtime 2000x"
		echo "fxbus -bench InProcessBroker -benchmem"
		;;
	outbox)
		echo "fxoutbox -bench ^BenchmarkUnitOfWork$|CommitToHandler|GoCostPerCommand -benchmem"
		echo "fxoutbox -bench UnitOfWorkUnderLoad/callers=(1|4|16)$ -benchtime 2000x"
		echo "fxoutbox -bench UnitOfWorkWAL/callers=(1|4|16)$ -benchtime 1000x"
		;;
	durable)
		echo "benchmarks/durable -bench DurableLatency|DurableCost -benchtime 2500x"
		echo "benchmarks/durable -bench Drain|Consume -benchtime 5000x"
		echo "benchmarks/durable -bench EmitToRemote -benchtime 3000x"
		;;
	saga)
		echo "fxsaga -bench ^BenchmarkSaga$|Recovery -benchmem"
		echo "fxsaga -bench WaitingSaga -benchtime 300x"
		;;
	relay) echo "fxoutbox -bench RelayDrain -benchtime 20000x" ;;
	quiet) # not in all: run it alone, on a machine with nothing else running
		echo "fxoutbox -bench UnitOfWorkUnderLoad -benchtime 2000x -benchmem"
		echo "fxoutbox -bench UnitOfWorkWAL -benchtime 2000x"
		echo "benchmarks/durable -bench EmitToRemote/rate=(1500|2000|2500)/ -benchtime 6000x"
		echo "fxoutbox -bench ^BenchmarkRelayDrain$ -benchtime 20000x"
		;;
	kafka) echo "fxbus/kafkabus/kafkatest -bench RelayDrain|Consume -benchtime 3000x -benchmem" ;;
	*)
		echo "figures.sh: no suite $1 (suites: ${all[*]}, and quiet, for a machine with nothing else running)" >&2
		return 1
		;;
	esac
}

# quote writes its arguments as a shell would need them typed.
quote() {
	local out=() a
	for a in "$@"; do
		if [[ $a =~ ^[A-Za-z0-9_./=:-]+$ ]]; then out+=("$a"); else out+=("'$a'"); fi
	done
	echo "${out[*]}"
}

[ $# -gt 0 ] || set -- "${all[@]}"
mkdir -p "$root/benchmarks/results"
for name in "$@"; do
	runs=$(suite "$name")
	case $name in
	mediator | root | otel | brokers | versions | interop) rounds=${ROUNDS:-6} ;;
	*) rounds=${ROUNDS:-3} ;;
	esac
	out=$root/benchmarks/results/$name.txt
	tmp=$out.partial
	trap 'rm -f "$tmp"' EXIT # a failed run leaves the last good file, and nothing half-written
	{
		while read -r dir args; do
			echo "command: (cd $dir && go test -run '^\$' $(quote $args) -count 1)"
		done <<<"$runs"
		echo "rounds: $rounds"
		echo "date: $(date -u +%Y-%m-%d)"
		[ "$name" != quiet ] || echo "machine: quiet"
	} >"$tmp"
	for ((r = 1; r <= rounds; r++)); do
		while read -r dir args; do
			# shellcheck disable=SC2086 # args are words; the regexps hold no spaces
			echo "== $name: round $r of $rounds: (cd $dir && go test -run '^\$' $(quote $args) -count 1)" >&2
			# shellcheck disable=SC2086 # args are words; the regexps hold no spaces
			(cd "$root/$dir" && FXCQRS_REQUIRE_SERVICES=1 go test -run '^$' $args -count 1 -timeout 60m) >>"$tmp"
		done <<<"$runs"
	done
	mv "$tmp" "$out"
	echo "wrote benchmarks/results/$name.txt" >&2
done
