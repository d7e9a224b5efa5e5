"""CASEMIS Import for Airflow.

Imports the CASEMIS Student Data (tableA) and Student Services Data (tableB) files that a
special-education vendor exports into the Aeries Special Ed tables (CSE, CSV).

The package is plain Python: only ``casemis.dag_tasks`` style glue and ``casemis.web``
import Airflow. Everything else is usable from the CLI (``python -m casemis --help``).
"""

from __future__ import annotations

__version__ = "0.1.0"
