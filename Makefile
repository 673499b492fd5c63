# wgsyncd developer entry points. `make demo` and `make test` are the README's two commands.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEBIAN_PYTHON ?= /usr/bin/python3
PYTEST_ARGS ?=

.PHONY: venv demo test test-fast test-debian-libs test-slow lint deb bench bench-fleet clean deps-demo deps-test faults

# The Debian packages each entry point needs (.ci/packages.txt, shared with .ci/run):
# apt-get runs only when dpkg says one is missing, and prints what it installs.
deps-demo:
	./scripts/install-deps demo

deps-test:
	./scripts/install-deps demo test slow

$(BIN)/wgsyncd: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(BIN)/wgsyncd

# Runs the main job here with nothing set up: a throwaway PostgreSQL, a wireguard-go
# interface with peers, its conf file and a wgrest server -> wgsyncd sync -> status + rows.
demo: deps-demo
	$(MAKE) --no-print-directory venv
	$(BIN)/python -m tests.demo

lint: venv
	$(BIN)/ruff check wgsyncd tests
	$(BIN)/ruff format --check wgsyncd tests

# Every tier, fast first: lint, unit + PostgreSQL + wireguard-go (PyPI libraries),
# the same unit tests on Debian 12's own libraries, then the slow beds.
test: deps-test
	$(MAKE) --no-print-directory lint test-fast test-debian-libs test-slow

test-fast: venv
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

.cache/wgconfig-pylib/wgconfig/__init__.py: debian/vendor-wgconfig.sh
	./debian/vendor-wgconfig.sh .cache/wgconfig-pylib .cache

# Debian's python3-pyroute2 0.7.2, python3-psycopg 3.1, python3-click, python3-requests
test-debian-libs: .cache/wgconfig-pylib/wgconfig/__init__.py
	PYTHONPATH=$(CURDIR):$(CURDIR)/.cache/wgconfig-pylib $(DEBIAN_PYTHON) -m pytest -p no:cacheprovider \
	    -m "not slow" tests/unit $(PYTEST_ARGS)

test-slow: venv
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist .pytest_cache *.egg-info

# The Debian package, built from a copy of the tree into dist/ (README: `make deb`).
deb:
	./debian/build-deb.sh $(CURDIR)/dist

# The benchmark (issue 6): the hand-scripted floor vs wgsyncd at 1,000 and 10,000 peers, and
# 1,000 hosts x 1,000 peers on one PostgreSQL, directly and again through pgbouncer
# (transaction mode). Root, wireguard-go, PostgreSQL 15, pgbouncer; ~10 min. Plus the netlink
# read of 10,000 peers in the kernel VM vs `wg show all dump` + parse (~1 min; BENCH_ARGS=--no-vm).
# Prints the table, writes tests/bench/results/<UTC time>.json. BENCH_ARGS=--large adds 50,000.
bench: venv
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

# The fleet benchmark (issue 14 item 2): 10,000 hosts x 1,000 peers every 60 s through
# pgbouncer (transaction mode) into one PostgreSQL with fsync on; the writer's recorded
# statements replayed from one connection per host. Root, PostgreSQL 15, pgbouncer;
# ~20 min, ~30 GB in /tmp. Writes tests/bench/results/fleet-<UTC time>.json.
# FLEET_ARGS="--hosts 2000 --steps 1" for a shorter run.
bench-fleet: venv
	$(BIN)/python -m tests.bench.fleet $(FLEET_ARGS)

# The fault suite (issue 16): PostgreSQL killed for real, a silent DB, outages with counter
# resets, SIGTERM mid-cycle and mid-replay, a full/read-only state dir... against wireguard-go
# and the real daemon. Root; ~5 min. Prints the table (README "Reliability"), writes
# tests/faults/results/<UTC time>.md. FAULTS_ARGS="--kills 60". The short form runs in
# `make test-fast` (tests/faults/test_faults.py, marker `faults`).
faults: venv
	$(BIN)/python -m tests.faults $(FAULTS_ARGS)

# Fuzzing (issue 16 item 3): Hypothesis. FUZZ_EXAMPLES cases per parser target (UAPI replies,
# netlink dump bytes, config files, wgrest v1/v2 answer bodies), FUZZ_ORACLE_EXAMPLES generated conf files checked against
# wg-quick's parse_options, `wg setconf` on a wireguard-go interface and `ip` (root). Prints the
# figures; CI's fast tier runs the same tests with a small profile (tests/fuzzing.py).
FUZZ_EXAMPLES ?= 5000
FUZZ_ORACLE_EXAMPLES ?= 2000
.PHONY: fuzz
fuzz: venv
	WGSYNCD_FUZZ_REPORT=1 WGSYNCD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) WGSYNCD_FUZZ_ORACLE_EXAMPLES=$(FUZZ_ORACLE_EXAMPLES) \
	    $(BIN)/pytest -p no:cacheprovider -q tests/unit/test_fuzz_parsers.py tests/unit/test_fuzz_wgrest.py tests/fuzz $(PYTEST_ARGS)
