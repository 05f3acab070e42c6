# pi-builder developer entry points. The logic lives in scripts/ so it can be read and run on
# its own; these targets only chain the steps.

# Installation layout (see scripts/install for the other directories it accepts).
PREFIX ?= /usr/local
DESTDIR ?=
BIN_DIR ?= target/release
CARGO ?= cargo
# Optional overrides scripts/install reads from the environment (empty means its default).
export UNITDIR DBUS_POLICYDIR POLKIT_ACTIONDIR

.PHONY: build dev-up test demo bench install deb lint fuzz api-docs

build:
	$(CARGO) build --workspace

# Builds here rather than in the script so a build error stops make (and CI) at once;
# scripts/dev-up run by hand builds by itself and only warns on failure.
dev-up: build
	PIB_SKIP_BUILD=1 scripts/dev-up

# Tests talk to the real system bus, polkitd, udisksd and dockerd, so bring them up first.
# A recursive make keeps `make -j test` from running the suite before dev-up finished.
test:
	$(MAKE) --no-print-directory dev-up
	scripts/test

demo:
	$(MAKE) --no-print-directory dev-up
	scripts/demo

# The bus fuzzer's long form (the short one runs in `make test`): PIB_FUZZ_SECS (default 600
# here), PIB_FUZZ_CALLS and PIB_FUZZ_SEED as tests/fuzz.rs describes.
PIB_FUZZ_SECS ?= 600
fuzz:
	$(MAKE) --no-print-directory dev-up
	PIB_FUZZ_SECS=$(PIB_FUZZ_SECS) $(CARGO) test -p pib-tests --test fuzz -- --nocapture

# The benchmarks (numbers and method in BENCHMARKS.md): an unchanged rebuild against docker
# build, a disk image against the naive mount-and-copy pipeline, a card write against dd and
# bmaptool, status calls of 50 clients during a build against the bus round trip.
# BENCH_RUNS=N sets the number of runs.
bench: dev-up
	scripts/bench-build
	scripts/bench-image
	scripts/bench-flash
	scripts/bench-load

# Installs target/release by default; BIN_DIR=target/debug tries it without a release build.
install:
	PREFIX='$(PREFIX)' DESTDIR='$(DESTDIR)' BIN_DIR='$(BIN_DIR)' scripts/install

# Debian packages pi-builder (client) and pi-builder-daemon in target/debian (OUT_DIR), from
# a release build; see scripts/deb. `make install` stays for other distributions.
deb:
	$(CARGO) build --release -p pib-client -p pib-daemon
	BIN_DIR='$(BIN_DIR)' scripts/deb

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# docs/api.md from the contract XML, the daemon's authorization table and the polkit policy
# (a test in the daemon fails while the committed file is stale).
api-docs:
	PIB_WRITE_API_DOCS=1 $(CARGO) test -p pib-daemon --bin pib-daemon docs_api_md_is_generated
