# Tally: `make run` serves the console on the embedded default; `make test` runs everything.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
WS_PORT ?= 8001

.PHONY: run demo test venv system-deps lint fmt typecheck migrations-check pytest bench lock worker beat serve serve-ws clean

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements.lock
	touch $@

# The compiled stat reader (monitoring/pollers/_stat_reader.pyx); the script rebuilds it only when its
# source, itself or the installed lxml changed.
venv: $(VENV)/.installed
	$(PY) deploy/scripts/build_stat_reader.py

## run: set up, migrate, make sure an admin exists, then serve the console under ASGI on the embedded default
run: venv
	$(PY) manage.py migrate --noinput
	$(PY) manage.py bootstrap_admin
	@echo "Tally console: http://$(HOST):$(PORT)/"
	$(VENV)/bin/daphne -b $(HOST) -p $(PORT) console.asgi:application

## demo: the embedded console, a local nginx-rtmp with the config Tally rendered, and 3 ffmpeg publishers
## (one drops and reconnects every minute); Ctrl-C stops everything
demo: system-deps venv
	$(PY) deploy/demo.py --port $(PORT)

## test: install what the tests need (apt packages too), lint, type-check, migration check, whole suite
test: system-deps venv lint typecheck migrations-check pytest

system-deps:
	sh deploy/scripts/install-system-deps.sh

lint: venv
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

fmt: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: venv
	$(VENV)/bin/mypy console streams monitoring frontend

migrations-check: venv
	DATABASE_URL= REDIS_URL= TALLY_VAR_DIR=var/check $(PY) manage.py makemigrations --check --dry-run

pytest: venv
	$(VENV)/bin/pytest

## bench: every benchmark in bench/, each printing one JSON line last
bench: venv
	@for b in bench/[!_]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

## lock: re-resolve the pinned set from pyproject.toml's dependencies (+ test extras)
lock:
	sh deploy/scripts/lock.sh

## Scalable mode (set DATABASE_URL and REDIS_URL): HTTP, websockets, worker, beat
serve: venv
	TALLY_DB_PERSISTENT=1 $(VENV)/bin/uwsgi --strict --master --http-socket $(HOST):$(PORT) --module console.wsgi:application --processes 3 --lazy-apps --single-interpreter --enable-threads --need-app --die-on-term --harakiri 30 --buffer-size 65535  # as deploy/systemd/tally-web.service
serve-ws: venv
	$(VENV)/bin/daphne -b $(HOST) -p $(WS_PORT) console.asgi:application
worker: venv
	$(VENV)/bin/celery -A console worker --loglevel INFO
beat: venv
	$(VENV)/bin/celery -A console beat --loglevel INFO --schedule var/celerybeat-schedule

clean:
	rm -rf $(VENV) var/pytest var/check monitoring/pollers/_stat_reader.*.so
