# carweb: `make run` starts everything locally, `make test` runs every test.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || date +%Y%m%d%H%M%S)
RELEASE := dist/carweb-$(VERSION).tar.gz
IMAGE ?= carweb
DEPLOY_PREFIX ?= /opt/carweb

.PHONY: build run test test-faults lint format assets packages clean docker-build docker-test docker-run deploy

$(STAMP): requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

static/vendor/.built: package.json package-lock.json deploy/vendor.sh
	npm ci --no-audit --no-fund --loglevel=error
	deploy/vendor.sh
	touch $@

assets: static/vendor/.built

run: $(STAMP) assets
	$(BIN)/python -m carweb.devstack

# A release to deploy: every tracked file and the built browser libraries, dist/carweb-VERSION.tar.gz.
build: $(STAMP) assets
	deploy/package.sh $(RELEASE)

docker-build:
	docker build -t $(IMAGE):$(VERSION) -t $(IMAGE):latest .

# The image builds, carweb loads in it and answers its CLI, and the compose file is valid.
docker-test: docker-build
	docker run --rm -e SECRET_KEY=docker-test $(IMAGE):$(VERSION) flask --app carweb routes >/dev/null
	SECRET_KEY=x CARWEB_MQTT_PASSWORD=x CARWEB_WS_MQTT_PASSWORD=x CARWEB_PUBLIC_URL=https://example.com docker compose config --quiet

# One machine with Docker Compose (docs/deploy.md): MongoDB, Mosquitto, Redis, carweb, nginx.
docker-run:
	docker compose up -d --build
	@echo "carweb: https://localhost (docker compose logs -f web)"

# Ship a release to DEPLOY_HOST (ssh) into DEPLOY_PREFIX/releases/, switch `current`, restart the units.
deploy: build
	@test -n "$(DEPLOY_HOST)" || { echo "make: set DEPLOY_HOST=user@host (and DEPLOY_PREFIX, default /opt/carweb)"; exit 1; }
	scp $(RELEASE) deploy/install.sh $(DEPLOY_HOST):/tmp/
	ssh $(DEPLOY_HOST) "sudo sh /tmp/install.sh /tmp/$(notdir $(RELEASE)) $(DEPLOY_PREFIX) --restart"

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
