#!/usr/bin/env bash
# `make run`: the main job on the embedded default (SQLite everywhere, sample files).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
echo "== validating the sample files in include/sample_data"
$PY -m casemis validate --table-a include/sample_data/tableA.csv --table-b include/sample_data/tableB.csv
