# lunbridge — the two commands a new machine needs are `make demo` and `make test`.
# Both install what they need (Debian packages through scripts/install-deps.sh).

GO        ?= go
# OUT: where build, man and completions put what make install copies.
OUT       ?= bin
BIN       := $(OUT)/lunbridge
PKGS      := ./...
FUZZTIME  ?= 20000x
TESTFLAGS ?=
export CGO_ENABLED := 0

# The version lunbridge --version prints: git describe (a tag when there is
# one, else the commit), "-dirty" with local changes.
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)

# make install: PREFIX (default /usr/local) and DESTDIR (staging root) as
# usual; each directory below can be overridden too.
PREFIX      ?= /usr/local
BINDIR      ?= $(PREFIX)/bin
MANDIR      ?= $(PREFIX)/share/man
UNITDIR     ?= $(PREFIX)/lib/systemd/system
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
UNITS       := lunbridge-serve@.service lunbridge-serve@.socket lunbridge-attach@.service lunbridge-mount@.service

.PHONY: all build build-lunbridge man completions install uninstall deps vmlab-deps lint-quick test test-go test-fuzz test-vm lint bench demo demo-stop clean soak

all: build

build: build-lunbridge
	$(GO) build -o bin/lbtarget ./internal/testrig/targets/cmd/lbtarget
	$(GO) build -o bin/lbnvme ./internal/testrig/fakenvme/cmd/lbnvme

build-lunbridge:
	$(GO) build -trimpath -ldflags='$(LDFLAGS)' -o $(BIN) ./cmd/lunbridge

# Man pages, one per command, generated from the command definitions.
man: build-lunbridge
	rm -rf $(OUT)/man && $(BIN) man-pages $(OUT)/man

completions: build-lunbridge
	mkdir -p $(OUT)/completions
	$(BIN) completion bash > $(OUT)/completions/lunbridge.bash
	$(BIN) completion zsh > $(OUT)/completions/_lunbridge
	$(BIN) completion fish > $(OUT)/completions/lunbridge.fish

# The units name the binary as /usr/local/bin/lunbridge; install writes
# $(BINDIR) there. The systemd units need `systemctl daemon-reload`.
install: build-lunbridge man completions
	install -D -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/lunbridge
	install -d $(DESTDIR)$(MANDIR)/man1
	install -m 0644 $(OUT)/man/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -D -m 0644 $(OUT)/completions/lunbridge.bash $(DESTDIR)$(BASHCOMPDIR)/lunbridge
	install -D -m 0644 $(OUT)/completions/_lunbridge $(DESTDIR)$(ZSHCOMPDIR)/_lunbridge
	install -D -m 0644 $(OUT)/completions/lunbridge.fish $(DESTDIR)$(FISHCOMPDIR)/lunbridge.fish
	install -d $(DESTDIR)$(UNITDIR)
	for u in $(UNITS); do \
	  sed 's|/usr/local/bin/lunbridge|$(BINDIR)/lunbridge|g' scripts/systemd/$$u > $(DESTDIR)$(UNITDIR)/$$u && \
	  chmod 0644 $(DESTDIR)$(UNITDIR)/$$u || exit 1; \
	done

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/lunbridge $(DESTDIR)$(MANDIR)/man1/lunbridge.1 $(DESTDIR)$(MANDIR)/man1/lunbridge-*.1
	rm -f $(DESTDIR)$(BASHCOMPDIR)/lunbridge $(DESTDIR)$(ZSHCOMPDIR)/_lunbridge $(DESTDIR)$(FISHCOMPDIR)/lunbridge.fish
	for u in $(UNITS); do rm -f $(DESTDIR)$(UNITDIR)/$$u; done

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

# make soak: every block-history scenario of internal/testrig/blockcheck for
# SOAK_TIME each (default 10m), against the built bin/lunbridge; the table
# of figures goes to docs/reliability.md. SOAK_SEED replays a seed.
SOAK_TIME ?= 10m
SOAK_SEED ?=
soak: deps build
	BLOCKCHECK_SOAK_TIME=$(SOAK_TIME) BLOCKCHECK_SEED=$(SOAK_SEED) \
	  BLOCKCHECK_LUNBRIDGE=$(CURDIR)/$(BIN) BLOCKCHECK_REPORT=$(CURDIR)/docs/reliability.md \
	  BLOCKCHECK_COMMAND="make soak SOAK_TIME=$(SOAK_TIME)" \
	  $(GO) test -count=1 -timeout 0 -v -run TestHistory ./internal/testrig/blockcheck/

test-vm: build
	LUNBRIDGE_VMLAB=1 $(GO) test -count=1 -timeout 30m -v ./internal/testrig/vmlab/...

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
