"""Where the project's data files live.

The code never relies on the current working directory: ``include/`` is found next to
``plugins/`` (the repository layout and the Docker image layout alike), and both can be
overridden by environment variables for deployments that mount them elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """Return the project root (``CASEMIS_HOME`` or the folder holding ``plugins/``)."""
    env = os.environ.get("CASEMIS_HOME")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2]


def include_dir() -> Path:
    """Return the ``include/`` folder (``CASEMIS_INCLUDE_DIR`` overrides)."""
    env = os.environ.get("CASEMIS_INCLUDE_DIR")
    if env:
        return Path(env)
    return project_root() / "include"


def schema_path(kind: str) -> Path:
    """Return the YAML contract of one file kind (``table_a`` or ``table_b``)."""
    return include_dir() / "schemas" / f"{kind}.yaml"


def resolve(path: str | os.PathLike[str]) -> Path:
    """Resolve a configured path: absolute paths as given, relative ones from the project root."""
    p = Path(path)
    return p if p.is_absolute() else project_root() / p
