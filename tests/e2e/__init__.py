"""End-to-end tests: the DAG under real Airflow services."""

from __future__ import annotations
