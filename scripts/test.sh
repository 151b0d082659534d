#!/usr/bin/env bash
# The project's checks: lint, types, then every test (unit, operator against kmock, trainer,
# packaging, end-to-end quickstart). Uses .venv when present (scripts/install-dev.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .venv/bin/activate ] && . .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
ruff check .
ruff format --check .
mypy
pytest -p no:cacheprovider "$@"
