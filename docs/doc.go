// Package docs holds the checks that keep the documentation in this
// folder and the repository's README.md true to the code: each Go snippet
// a page shows is the region of a tested file it names, each measured
// figure is computed from the benchmark output in benchmarks/results/
// (perf.go) and none is typed, each relative link and anchor leads
// somewhere, and each error the library's start path can return and each
// message it logs at warn or error has an entry in troubleshooting.md. The
// checks run with `make test` (this folder is a module of its own,
// standard library only); docs_test.go explains how to fix each failure.
package docs
