#!/usr/bin/env bash
# Recompile the dependency locks from requirements/*.in, with the real PyPI sha256 of every file:
#   requirements/dev.txt      everything CI and developers install (runtime + tests and tooling)
#   requirements/runtime.txt  what the Dockerfile and scripts/demo.sh install; compiled with dev.txt as
#                             constraints, so every package both need has the same version and hashes.
# Usage:
#   ./scripts/lock.sh                          after editing a .in file: keeps every pin still allowed
#   ./scripts/lock.sh --upgrade                the newest release of everything the .in ranges allow
#   ./scripts/lock.sh --upgrade-package NAME   only NAME (repeatable)
# Then review `git diff requirements/`, run .ci/run, and commit the .in and .txt files together.
# The lock tool (uv, pinned below) lives in a throw-away virtualenv; it reads no pip or uv config of
# this machine and resolves against PyPI alone, for Python 3.11 and newer on every platform.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.9
# PyPI (both tools' default index) and nothing else: no local index or wheel folder of this machine.
unset PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_CONSTRAINT \
  UV_INDEX UV_INDEX_URL UV_DEFAULT_INDEX UV_EXTRA_INDEX_URL UV_FIND_LINKS UV_CONSTRAINT UV_OVERRIDE
export PIP_CONFIG_FILE=/dev/null

tool="$(mktemp -d)"
trap 'rm -rf "$tool"' EXIT
python3 -m venv "$tool"
"$tool/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"

compile() {
  "$tool/bin/uv" pip compile --quiet --no-config --universal --python-version 3.11 \
    --generate-hashes --custom-compile-command ./scripts/lock.sh "$@"
}
compile "$@" requirements/dev.in -o requirements/dev.txt
compile -c requirements/dev.txt requirements/runtime.in -o requirements/runtime.txt
echo "scripts/lock.sh: requirements/dev.txt ($(grep -c '^[a-zA-Z]' requirements/dev.txt) packages)" \
  "and requirements/runtime.txt ($(grep -c '^[a-zA-Z]' requirements/runtime.txt) packages) written"
