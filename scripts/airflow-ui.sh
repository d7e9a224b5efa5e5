#!/usr/bin/env bash
# `make ui`: start Airflow locally (api-server, scheduler, dag-processor, triggerer) on the
# embedded default, to watch runs of casemis_import in the UI at http://localhost:8080.
# Log in as admin; the password is in var/airflow/simple_auth_manager_passwords.json.generated.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/airflow-env.sh
airflow db migrate >var/airflow/migrate.log 2>&1 || { cat var/airflow/migrate.log; exit 1; }
.venv/bin/python -m casemis init-db --target "sqlite:///$PWD/var/aeries.db" --stu include/sample_data/stu.csv
echo "Airflow UI: http://localhost:8080  (user admin, password in $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated)"
exec airflow standalone
