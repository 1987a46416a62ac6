#!/usr/bin/env bash
# Builds the wheel and installs it, with the dependencies pinned in uv.lock and nothing else,
# into a fresh virtual environment at $1. The Dockerfile's build stage runs exactly this, and so
# does a test, since there is no container engine to build the image here.
set -euo pipefail
venv=${1:?usage: install-venv.sh VENV_DIR}
uv=${UV:-uv}
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cd "$src"
"$uv" export --frozen --no-emit-project --format requirements-txt -o "$work/requirements.txt" >/dev/null
"$uv" build --wheel --out-dir "$work/dist" >/dev/null
"$uv" venv --python "${PYTHON:-python3}" "$venv" >/dev/null
VIRTUAL_ENV="$venv" "$uv" pip install --require-hashes -r "$work/requirements.txt" >/dev/null
VIRTUAL_ENV="$venv" "$uv" pip install --no-deps "$work"/dist/*.whl >/dev/null
