#!/usr/bin/env bash
# Mutation check of named modules (or of every module changed since a commit): see
# scripts/mutation_check.py for what it does and prints. Needs requirements-dev.txt.
#   bash scripts/mutation_check.sh engine/core/thresholds.py datasets/sets/
#   bash scripts/mutation_check.sh --since HEAD~5 --min_rate 90
set -euo pipefail
exec "${PYTHON:-python}" "$(dirname "$0")/mutation_check.py" "$@"
