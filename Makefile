# pi-builder developer entry points. The logic lives in scripts/ so it can be read and run on
# its own; these targets only chain the steps.

# Installation layout (see scripts/install for the other directories it accepts).
PREFIX ?= /usr/local
DESTDIR ?=
BIN_DIR ?= target/release
CARGO ?= cargo
# Optional overrides scripts/install reads from the environment (empty means its default).
export UNITDIR DBUS_POLICYDIR POLKIT_ACTIONDIR

.PHONY: build dev-up test demo bench install lint api-docs

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

# The benchmarks (numbers and method in BENCHMARKS.md): an unchanged rebuild against docker
# build, a disk image against the naive mount-and-copy pipeline, a card write against dd and
# bmaptool. BENCH_RUNS=N sets the number of runs.
bench: dev-up
	scripts/bench-build
	scripts/bench-image
	scripts/bench-flash

# Installs target/release by default; BIN_DIR=target/debug tries it without a release build.
install:
	PREFIX='$(PREFIX)' DESTDIR='$(DESTDIR)' BIN_DIR='$(BIN_DIR)' scripts/install

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# docs/api.md from the contract XML, the daemon's authorization table and the polkit policy
# (a test in the daemon fails while the committed file is stale).
api-docs:
	PIB_WRITE_API_DOCS=1 $(CARGO) test -p pib-daemon --bin pib-daemon docs_api_md_is_generated
