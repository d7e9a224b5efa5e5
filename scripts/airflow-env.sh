# Source this to run Airflow locally on the embedded default (SQLite everywhere).
# Used by `make run` and `make ui`; everything lives under var/ (ignored by git).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export AIRFLOW_HOME="$ROOT/var/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$ROOT/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__PARALLELISM=4
export AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK=False
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin"
export CASEMIS_HOME="$ROOT"
# The demo Aeries database (SQLite) as an Airflow connection: the DAG reads its target from here.
export AIRFLOW_CONN_CASEMIS_TARGET="${AIRFLOW_CONN_CASEMIS_TARGET:-{\"conn_type\": \"sqlite\", \"host\": \"$ROOT/var/aeries.db\"}}"
export CASEMIS_STABLE_SECONDS="${CASEMIS_STABLE_SECONDS:-1}"
export PATH="$ROOT/.venv/bin:$PATH"
mkdir -p "$AIRFLOW_HOME"
