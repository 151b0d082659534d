#!/usr/bin/env bash
# The project's checks: lint, types, then every test (unit, operator against kmock, trainer,
# packaging, end-to-end quickstart). Run from the repository root inside the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
ruff check .
ruff format --check .
mypy
pytest -p no:cacheprovider "$@"
