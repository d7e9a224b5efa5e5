"""CASEMIS fields -> Aeries column values, driven by ``include/mappings/aeries.yaml``.

Values are kept as canonical text (dates ``YYYY-MM-DD``, whole numbers without leading
zeros, codes as given, blank as NA) so they can be staged in parquet and compared with what
the database holds; :mod:`casemis.loading` converts them to database types when it writes.
"""

from __future__ import annotations

import pandas as pd

from casemis.aeries import ColumnMap, TableMap


def canonical_series(values: pd.Series, kind: str) -> pd.Series:
    """Canonical text for one column of file values (already validated)."""
    text = values.astype("str")
    if kind == "int":
        numbers = pd.to_numeric(text, errors="coerce").astype("Int64")
        return numbers.astype("str").mask(numbers.isna())
    return text


def to_table_frame(rows: pd.DataFrame, table: TableMap, present_fields: list[str]) -> pd.DataFrame:
    """Build the rows of one Aeries table from matched file rows.

    Only columns whose CASEMIS field is in the file are produced, so a field the vendor left
    out never clears anything in Aeries. ``STU_ID`` becomes ``ID``; ``__line__`` is kept for
    the report.
    """
    columns: list[ColumnMap] = table.by_field(present_fields)
    out = pd.DataFrame({"ID": rows["STU_ID"].astype("int64"), "__line__": rows["__line__"].astype("int64")})
    for c in columns:
        out[c.column] = canonical_series(rows[c.field], c.type)
    return out.reset_index(drop=True)
