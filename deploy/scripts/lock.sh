#!/bin/sh
# Re-resolve requirements.lock: install pyproject.toml's dependencies (and the test extras) into a
# throwaway venv and freeze it. The project itself is not a package, so its deps are read directly.
set -eu
python3 -m venv var/lockenv
var/lockenv/bin/pip install -q --upgrade pip
python3 - > var/lockenv/requirements.in <<'PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["test"]))
PY
var/lockenv/bin/pip install -q -r var/lockenv/requirements.in
var/lockenv/bin/pip freeze > requirements.lock
rm -rf var/lockenv
