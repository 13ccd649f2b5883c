# Two entry points for a newcomer: `make demo` and `make test`. Each creates the
# virtual environment on first use, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: venv demo test lint typecheck check bench clean promtool

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/python -m tools.demo -c config/smppd.yaml

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

test: venv promtool lint typecheck
	$(BIN)/python -X dev -m pytest -q

# promtool for the alert-rule scenarios in tests/test_alerts.py, which need it: unpacked
# from Debian's prometheus package into the venv, nothing installed system-wide. Elsewhere,
# put a promtool binary at .venv/bin/promtool.
promtool: $(BIN)/promtool

$(BIN)/promtool: | $(BIN)/.installed
	@command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || { \
	  echo "promtool: apt-get and dpkg-deb (Debian, Ubuntu) fetch it; without them, put a" \
	       "promtool binary at $(BIN)/promtool" >&2; exit 1; }
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; cd "$$tmp"; \
	apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus; }; \
	dpkg-deb -x prometheus_*.deb unpacked; \
	install -m 0755 unpacked/usr/bin/promtool "$(abspath $(BIN))/promtool"
	$(BIN)/promtool --version | head -1

bench: venv
	$(BIN)/python bench/codec.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
