# carweb: `make run` starts everything locally, `make test` runs every test.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-faults lint format assets packages clean

$(STAMP): requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

static/vendor/.built: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	mkdir -p static/vendor
	cp node_modules/socket.io-client/dist/socket.io.min.js static/vendor/
	touch $@

assets: static/vendor/.built

run: $(STAMP) assets
	$(BIN)/python -m carweb.devstack

# The tests start their own Chromium, Mosquitto, nginx and Redis: as root on Debian we
# install the missing packages, elsewhere we say which are missing.
TEST_PACKAGES := chromium:chromium mosquitto:mosquitto mosquitto_passwd:mosquitto nginx:nginx redis-server:redis-server
packages:
	@missing=""; for pair in $(TEST_PACKAGES); do \
	  command -v "$${pair%%:*}" >/dev/null || test -x "/usr/sbin/$${pair%%:*}" || missing="$$missing $${pair##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "make: installing$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing mosquitto-clients >/dev/null; \
	  else echo "make: install the Debian packages$$missing for the tests"; exit 1; fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: $(STAMP) assets packages lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Only the fault tests (kill/restart the database, broker or carweb); `make test` runs them too.
test-faults: $(STAMP) assets packages
	$(BIN)/python -m pytest -m faults $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) node_modules static/vendor .pytest_cache .ruff_cache
