"""Entry point for ``python -m casemis``."""

from __future__ import annotations

import sys

from casemis.cli import main

if __name__ == "__main__":
    sys.exit(main())
