# lunbridge — the two commands a new machine needs are `make demo` and `make test`.
# Both install what they need (Debian packages through scripts/install-deps.sh).

GO        ?= go
BIN       := bin/lunbridge
PKGS      := ./...
FUZZTIME  ?= 20000x
TESTFLAGS ?=
export CGO_ENABLED := 0

.PHONY: all build deps vmlab-deps lint-quick test test-go test-fuzz test-vm lint bench demo demo-stop clean soak

all: build

build:
	$(GO) build -trimpath -ldflags='-s -w' -o $(BIN) ./cmd/lunbridge
	$(GO) build -o bin/lbtarget ./internal/targets/cmd/lbtarget

deps:
	bash scripts/install-deps.sh

# make test: install dependencies, check formatting and vet, run every test
# (unit, fuzz seeds, real tgtd/istgt interop, real clients, VM lab when it
# can boot), then a short fuzz run of every fuzz target.
test: deps vmlab-deps build lint-quick test-go test-fuzz

# The VM lab (LIO target, kernel NBD) needs qemu, busybox and a Debian
# kernel: installed and cached (~/.cache/lunbridge-vmlab) by build.sh.
vmlab-deps:
	bash scripts/vmlab/build.sh >/dev/null

lint-quick:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

test-go:
	LUNBRIDGE_VMLAB=1 $(GO) test -count=1 -timeout 60m -p 2 $(TESTFLAGS) $(PKGS)

test-fuzz:
	bash scripts/fuzz.sh $(FUZZTIME)

# make soak: every block-history scenario of internal/blockcheck for
# SOAK_TIME each (default 10m), against the built bin/lunbridge; the table
# of figures goes to docs/reliability.md. SOAK_SEED replays a seed.
SOAK_TIME ?= 10m
SOAK_SEED ?=
soak: deps build
	BLOCKCHECK_SOAK_TIME=$(SOAK_TIME) BLOCKCHECK_SEED=$(SOAK_SEED) \
	  BLOCKCHECK_LUNBRIDGE=$(CURDIR)/$(BIN) BLOCKCHECK_REPORT=$(CURDIR)/docs/reliability.md \
	  BLOCKCHECK_COMMAND="make soak SOAK_TIME=$(SOAK_TIME)" \
	  $(GO) test -count=1 -timeout 0 -v -run TestHistory ./internal/blockcheck/

test-vm: build
	LUNBRIDGE_VMLAB=1 $(GO) test -count=1 -timeout 30m -v ./internal/vmlab/...

lint: lint-quick
	$(GO) run honnef.co/go/tools/cmd/staticcheck@2025.1.1 $(PKGS)

bench: build
	bash scripts/bench.sh

demo: build
	bash scripts/demo.sh

demo-stop:
	bash scripts/demo-target.sh stop

clean:
	rm -rf bin
