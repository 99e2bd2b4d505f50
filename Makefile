# Every target installs what it needs first: a fresh machine needs only python3, npm and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ANVIL_VERSION := 1.7.1
ANVIL := .tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
export ANVIL_BIN := $(abspath $(ANVIL))

PG_FOUND = ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1
# Playwright drives the system's Chromium (tests/dashboard); it never downloads a browser of its own
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: postgresql chromium install chain demo gas test lint typecheck importlint artifacts check-artifacts bench clean

$(BIN)/statechannel: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==25.3
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

$(ANVIL):
	npm install --silent --no-audit --no-fund --prefix .tools @foundry-rs/anvil-linux-amd64@$(ANVIL_VERSION)

## the watchtower's PostgreSQL tests start their own server: they need the binaries (Debian package postgresql)
postgresql:
	@$(PG_FOUND) || { \
		[ "$$(id -u)" = 0 ] || { echo "PostgreSQL is missing: install the package postgresql (as root)"; exit 1; }; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq postgresql >/dev/null 2>&1 || \
		{ apt-get update -qq >/dev/null && apt-get install -y -qq postgresql >/dev/null; }; \
	}

## the dashboard's browser test drives headless Chromium (Debian package chromium) through Playwright
chromium:
	@test -x /usr/bin/chromium || { \
		[ "$$(id -u)" = 0 ] || { echo "Chromium is missing: install the package chromium (as root)"; exit 1; }; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq chromium >/dev/null 2>&1 || \
		{ apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; }; \
	}

install: $(BIN)/statechannel $(ANVIL) postgresql chromium

## what README's "Using it on a chain" needs: the CLI and anvil
chain: $(BIN)/statechannel $(ANVIL)

## the main job: the whole product on the embedded chain in well under a minute
demo: $(BIN)/statechannel
	$(BIN)/statechannel demo

## the gas of every on-chain step, both lifecycles, ETH and ERC-20
gas: $(BIN)/statechannel
	$(BIN)/statechannel gas

## every test: unit, contracts, both chain backends (anvil started by the tests on 127.0.0.1)
test: install
	$(BIN)/pytest -n 2 -q

lint: $(BIN)/statechannel
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(BIN)/statechannel
	$(BIN)/mypy

importlint: $(BIN)/statechannel
	$(BIN)/lint-imports

artifacts: $(BIN)/statechannel
	$(BIN)/python -m statechannel.contracts.build

check-artifacts: $(BIN)/statechannel
	$(BIN)/python -m statechannel.contracts.build --check

## every benchmark, each printing JSON (the off-chain ones take a few minutes together)
bench: $(BIN)/statechannel $(ANVIL)
	$(BIN)/python bench/gas.py --json
	$(BIN)/python bench/channel.py --json
	$(BIN)/python bench/trading.py --json
	$(BIN)/python bench/twoproc.py --json
	$(BIN)/python bench/persist.py
	$(BIN)/python bench/store.py
	$(BIN)/python bench/metrics.py
	$(BIN)/python bench/restart.py --json --quick

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
