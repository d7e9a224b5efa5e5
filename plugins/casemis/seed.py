"""Create an Aeries-shaped demo database and seed STU from a CSV file.

Used by ``python -m casemis init-db``, the demo (``make run``) and the tests. Seeding is
safe to repeat: STU rows already present (same ``SC`` + ``SN``) are left alone.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from casemis.aeries import Tables, create_all
from casemis.loading import batched

log = logging.getLogger(__name__)

STU_COLUMNS = ("ID", "CID", "SC", "SN", "LN", "FN", "BD")


def read_stu_csv(path: Path) -> list[dict[str, object]]:
    """Read STU rows (``ID, CID, SC, SN, LN, FN, BD`` and optionally ``DEL``) from CSV."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in STU_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path.name}: missing STU columns {', '.join(missing)}")
    rows = []
    for rec in frame.to_dict("records"):
        rows.append(
            {
                "ID": int(rec["ID"]),
                "CID": rec["CID"] or None,
                "SC": int(rec["SC"]),
                "SN": int(rec["SN"]),
                "LN": rec["LN"] or None,
                "FN": rec["FN"] or None,
                "BD": dt.date.fromisoformat(rec["BD"]) if rec["BD"] else None,
                "DEL": str(rec.get("DEL", "")).strip().lower() in ("1", "true", "y", "yes"),
            }
        )
    return rows


def init_db(engine: sa.Engine, stu_csv: Path | None = None) -> int:
    """Create every table (no-op where they exist) and add the STU rows not present yet."""
    tables: Tables = create_all(engine)
    if stu_csv is None:
        return 0
    rows = read_stu_csv(stu_csv)
    stu = tables.stu
    with engine.begin() as conn:
        present = {(int(sc), int(sn)) for sc, sn in conn.execute(sa.select(stu.c.SC, stu.c.SN))}
        new = [r for r in rows if (r["SC"], r["SN"]) not in present]
        for chunk in batched(new):
            conn.execute(stu.insert(), list(chunk))
    log.info("STU: %d rows added, %d already present", len(new), len(rows) - len(new))
    return len(new)
