# CASEMIS Import for Airflow: the image every Airflow service in docker-compose.yaml runs,
# and the image to give the official Apache Airflow Helm chart on Kubernetes.
#
# The Airflow version appears three times and must stay equal (tests/test_compose.py checks):
# the FROM tag, the apache-airflow pin below, and apache-airflow in requirements.txt.
FROM apache/airflow:3.3.2-python3.11

# casemis.paths finds include/ (CASEMIS contracts, the Aeries mapping) here. Airflow puts
# plugins/ on sys.path itself; PYTHONPATH also makes `python -m casemis` work in a shell.
ENV CASEMIS_INCLUDE_DIR=/opt/airflow/include \
    PYTHONPATH=/opt/airflow/plugins

# Install as the airflow user (the official image's advice), re-pinning apache-airflow to the
# image's own version so that no requirement can up- or downgrade it. constraints.txt pins
# every transitive package to the versions the test suite ran with.
USER airflow
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/airflow/
RUN pip install --no-cache-dir "apache-airflow==3.3.2" \
        -r /opt/airflow/requirements.txt \
        -c /opt/airflow/constraints.txt

# Bake the project in, so the image runs on its own (Helm chart, or compose without the
# bind mounts). docker-compose.yaml mounts the working tree over these for quick edits.
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 include/ /opt/airflow/include/
