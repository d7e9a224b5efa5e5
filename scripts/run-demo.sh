#!/usr/bin/env bash
# `make run`: the whole import on the embedded default. Airflow's metadata database and the
# demo Aeries database are SQLite files under var/; the sample files come from
# include/sample_data (the configured local folder). The DAG runs once with `airflow dags test`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/airflow-env.sh
PY=.venv/bin/python

echo "== 1/4 Airflow metadata database (SQLite) in var/airflow"
airflow db migrate >var/airflow/migrate.log 2>&1 || { cat var/airflow/migrate.log; exit 1; }

echo "== 2/4 demo Aeries database var/aeries.db, STU seeded from include/sample_data/stu.csv"
$PY -m casemis init-db --target "sqlite:///$PWD/var/aeries.db" --stu include/sample_data/stu.csv

echo "== 3/4 running the casemis_import DAG once on include/sample_data (log: var/airflow/dags-test.log)"
airflow dags test casemis_import >var/airflow/dags-test.log 2>&1 || { tail -40 var/airflow/dags-test.log; exit 1; }

echo "== 4/4 result"
report=$(ls -td var/reports/*/ | head -1)
$PY - "$report" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1] + "summary.json"))
print(f"status: {summary['status']}: {summary['message']}")
for kind, counts in summary["counts"].items():
    if counts:
        print(f"  {kind}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
PY
echo "report: $report (report.html, report.txt and the CSV attachments)"
echo "Run it again and nothing changes (0 added, 0 updated). See the run in the UI: make ui"
