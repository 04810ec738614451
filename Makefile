# The two commands of the README: `make demo` and `make test`. Both install what they need first:
# the Python packages into .venv, the web UI's packages into web/node_modules (then build the UI
# into pulseboard/static), and for the browser tests Debian's Chromium when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
CHROMIUM ?= /usr/bin/chromium
WEB_SOURCES := $(shell find web/src -type f 2>/dev/null) $(wildcard web/*.json web/*.ts web/*.html)
UI := pulseboard/static/index.html

.PHONY: demo test lint install ui browser

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11 or newer is needed")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

web/node_modules/.installed: web/package-lock.json
	@command -v npm >/dev/null || { echo "the web UI needs Node.js and npm"; exit 1; }
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(UI): web/node_modules/.installed $(WEB_SOURCES)
	cd web && npm run --silent build

ui: $(UI)

# Browser tests drive Debian's Chromium (never a downloaded browser). Installed here when missing
# and we may (root with apt); otherwise the browser tests say what is missing.
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || \
	    { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; \
	  else echo "note: the browser tests need Chromium at $(CHROMIUM) (Debian package chromium)"; fi; }

demo: $(STAMP) $(UI)
	$(BIN)/pulseboard demo

lint: $(STAMP) web/node_modules/.installed
	$(BIN)/ruff check pulseboard tests
	$(BIN)/ruff format --check pulseboard tests
	$(BIN)/mypy
	cd web && npm run --silent check

test: lint $(UI) browser
	$(BIN)/pytest
