# Every Go module of the repository: the library (with its examples) and
# the modules kept apart so their dependencies never reach users.
MODULES := $(patsubst ./%,%,$(patsubst %/go.mod,%,$(shell find . -name go.mod -not -path './.git/*' | sort)))

GOLANGCI_LINT_VERSION := v2.15.0
BENCHSTAT_VERSION := v0.0.0-20260908200009-22c9c6c9d4da
GOBIN := $(shell go env GOPATH)/bin

# Runs a command in every module, each whatever the one before did, one
# ok/FAIL line per module, and fails at the end if any module failed.
EACH := MODULES="$(MODULES)" $(CURDIR)/.ci/each

.PHONY: test
test: ## go test -race in every module, then the allocation counts (which need the race detector off)
	@status=0; $(EACH) 'go test -race' go test -race -count=1 $(TESTFLAGS) ./... || status=1; \
		echo "== go test -run TestAllocations . ./fxoutbox"; go test -count=1 -run 'TestAllocations' . || status=1; \
		if [ -d fxoutbox ]; then (cd fxoutbox && go test -count=1 -run 'TestAllocations' .) || status=1; fi; \
		exit $$status

.PHONY: vet
vet:
	@$(EACH) 'go vet' go vet ./...

# The oldest Go the library supports, as the README says. A dependency
# upgrade that raises go.mod's directive fails CI instead of passing silently.
GO_MIN := 1.24

.PHONY: check-go-version
check-go-version:
	@v=$$(GOWORK=off go list -m -f '{{.GoVersion}}'); case $$v in $(GO_MIN)|$(GO_MIN).*) ;; \
		*) echo "go.mod says go $$v; the README promises Go $(GO_MIN)"; exit 1;; esac

.PHONY: check-modules
check-modules: ## the modules require one another without a loop
	@.ci/modgraph

.PHONY: lint
lint: vet check-go-version check-modules ## go vet, the go directive, and golangci-lint (installed at a pinned version)
	@test -x $(GOBIN)/golangci-lint && $(GOBIN)/golangci-lint version 2>/dev/null | grep -q $(GOLANGCI_LINT_VERSION:v%=%) || \
		go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	@$(EACH) golangci-lint $(GOBIN)/golangci-lint run ./...

# The figures of the docs: benchmarks/figures.sh runs each suite ROUNDS
# times (-count 1 a round, so that the two sides of a ratio alternate)
# into benchmarks/results/<suite>.txt, then the pages' figures regions are
# rewritten from those files and benchstat summarises them. SUITES picks
# suites (all when empty: mediator root otel brokers outbox durable saga
# relay kafka), ROUNDS overrides each suite's rounds; the database and
# broker suites need the servers.
SUITES ?=
ROUNDS ?=

.PHONY: bench-figures
bench-figures: ## run the benchmarks the docs' figures come from, write benchmarks/results/, regenerate the figures
	ROUNDS=$(ROUNDS) benchmarks/figures.sh $(SUITES)
	cd docs && go test -count=1 -run TestFigures -update .
	for f in $(if $(SUITES),$(patsubst %,benchmarks/results/%.txt,$(SUITES)),benchmarks/results/*.txt); do \
		go run golang.org/x/perf/cmd/benchstat@$(BENCHSTAT_VERSION) $$f || exit 1; done

.PHONY: bench-smoke
bench-smoke: ## every benchmark once, so none rots
	@$(EACH) bench-smoke sh -c 'out=$$(go test -run "^$$" -bench . -benchtime 1x ./... 2>&1) || { echo "$$out"; exit 1; }' 

.PHONY: build
build:
	@$(EACH) 'go build' go build -o /dev/null ./... # -o: a module of one main package writes no binary into the tree
