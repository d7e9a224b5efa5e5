"""Custom Pandera checks, registered by name so the YAML contracts can use them.

Pandera serialises only registered checks; registering them here (on import) lets
``include/schemas/*.yaml`` say ``casemis_date: {min_year: 1900, max_year: 2100}`` and have it
enforced after ``DataFrameSchema.from_yaml``.
"""

from __future__ import annotations

import pandas as pd
from pandera import extensions

#: Accepted date layouts, tried in this order. YYYYMMDD and MMDDYYYY cannot both succeed for a
#: year between 1900 and 2100 (a month is never 19, 20 or 21), so the order does not matter.
DATE_FORMATS: tuple[tuple[str, str, str], ...] = (
    ("YYYYMMDD", "%Y%m%d", r"\d{8}"),
    ("MMDDYYYY", "%m%d%Y", r"\d{8}"),
    ("MM/DD/YYYY", "%m/%d/%Y", r"\d{1,2}/\d{1,2}/\d{4}"),
    ("YYYY-MM-DD", "%Y-%m-%d", r"\d{4}-\d{2}-\d{2}"),
)
DATE_FORMAT_NAMES = ", ".join(name for name, _, _ in DATE_FORMATS[:-1]) + " or " + DATE_FORMATS[-1][0]


def parse_dates(values: pd.Series, min_year: int = 1900, max_year: int = 2100) -> pd.Series:
    """Parse CASEMIS date text into ISO ``YYYY-MM-DD`` strings; impossible dates become NA.

    Vectorised over the whole column: each accepted layout is tried once on the values
    not parsed yet. A date is impossible when no layout parses it (31 February, month 13)
    or its year falls outside ``[min_year, max_year]``.
    """
    text = values.astype("str").str.strip()
    result = pd.Series(pd.NA, index=values.index, dtype="str")
    todo = values.notna()
    for _, fmt, pattern in DATE_FORMATS:
        candidates = todo & text.str.fullmatch(pattern).fillna(False).astype(bool)
        if not candidates.any():
            continue
        parsed = pd.to_datetime(text[candidates], format=fmt, errors="coerce")
        good = parsed.notna() & parsed.dt.year.between(min_year, max_year)
        good_index = good[good].index
        result.loc[good_index] = parsed[good].dt.strftime("%Y-%m-%d")
        todo.loc[good_index] = False
    return result


@extensions.register_check_method(statistics=["min_year", "max_year"], supported_types=pd.Series)
def casemis_date(values: pd.Series, *, min_year: int, max_year: int) -> pd.Series:
    """True where the value is a real date in one of the accepted layouts."""
    return parse_dates(values, min_year, max_year).notna()


@extensions.register_check_method(statistics=["min_value", "max_value"], supported_types=pd.Series)
def casemis_int_range(values: pd.Series, *, min_value: int, max_value: int) -> pd.Series:
    """True where the value is a whole number (digits only) within ``[min_value, max_value]``."""
    text = values.astype("str").str.strip()
    digits = text.str.fullmatch(r"\d{1,9}").fillna(False).astype(bool)
    numbers = pd.to_numeric(text.where(digits), errors="coerce")
    return digits & numbers.between(min_value, max_value).fillna(False).astype(bool)
