"""Match tableA rows to Aeries students, like the Aeries import does.

Order: SSID -> ``STU.CID`` first, then ``STUDENT_ID`` -> ``STU.ID``. Soft-deleted STU rows
(``DEL``) never match. A student may have several STU rows (one per school) with the same
``ID``; that is one student. Rows whose student appears twice in the file (same SSID, same
STUDENT_ID, or two rows landing on the same Aeries student) are duplicates: reported, not
loaded. The pipeline never writes STU.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa

from casemis.aeries import Tables

#: Row outcomes, in precedence order: a row with a validation error is an error even if
#: it is also a duplicate; a duplicate is never matched.
ERROR, DUPLICATE, UNMATCHED, MATCHED = "error", "duplicate", "unmatched", "matched"


def read_students(conn: sa.Connection, tables: Tables) -> pd.DataFrame:
    """Read the live STU rows (``ID``, ``CID``) in one query; deleted rows are left out."""
    stu = tables.stu
    query = sa.select(stu.c.ID, stu.c.CID).where(sa.or_(stu.c.DEL.is_(None), stu.c.DEL == sa.false()))
    rows = conn.execute(query).all()
    frame = pd.DataFrame(rows, columns=["ID", "CID"])
    frame["ID"] = frame["ID"].astype("int64")
    frame["CID"] = frame["CID"].astype("str").str.strip()
    return frame


@dataclass
class MatchResult:
    """Per-row outcome for tableA: ``frame`` gains ``STU_ID``, ``OUTCOME`` and ``REASON``."""

    frame: pd.DataFrame

    def rows(self, outcome: str) -> pd.DataFrame:
        """Rows with one outcome."""
        return self.frame[self.frame["OUTCOME"] == outcome]

    def count(self, outcome: str) -> int:
        """How many rows have ``outcome``."""
        return int((self.frame["OUTCOME"] == outcome).sum())


def _duplicated(values: pd.Series) -> pd.Series:
    """True for every non-blank value that occurs more than once."""
    return values.notna() & values.duplicated(keep=False)


def match_students(table_a: pd.DataFrame, error_lines: set[int], students: pd.DataFrame) -> MatchResult:
    """Decide, for every tableA row, whether it is matched, unmatched, a duplicate or an error.

    ``table_a`` is the validated frame (canonical columns and ``__line__``); ``students`` is
    the output of :func:`read_students`.
    """
    frame = table_a.copy()
    ssid = frame["SSID"] if "SSID" in frame.columns else pd.Series(pd.NA, index=frame.index, dtype="str")
    local = (
        frame["STUDENT_ID"]
        if "STUDENT_ID" in frame.columns
        else pd.Series(pd.NA, index=frame.index, dtype="str")
    )

    # SSID -> CID: a CID shared by two different Aeries students cannot identify either.
    by_cid = students.dropna(subset=["CID"]).drop_duplicates(["CID", "ID"])
    ambiguous_cids = set(by_cid.loc[by_cid["CID"].duplicated(keep=False), "CID"])
    cid_map = by_cid[~by_cid["CID"].isin(ambiguous_cids)].set_index("CID")["ID"]
    live_ids = pd.Index(students["ID"].unique())

    via_ssid = ssid.map(cid_map)
    local_numbers = pd.to_numeric(
        local.where(local.str.fullmatch(r"\d{1,9}").fillna(False).astype(bool)), errors="coerce"
    )
    via_local = local_numbers.where(local_numbers.isin(live_ids))
    stu_id = via_ssid.fillna(via_local)

    outcome = pd.Series(MATCHED, index=frame.index, dtype="str")
    reason = pd.Series("", index=frame.index, dtype="str")
    outcome[stu_id.isna()] = UNMATCHED
    reason[stu_id.isna()] = "no Aeries student has this SSID (STU.CID) or STUDENT_ID (STU.ID)"
    reason[ssid.isin(ambiguous_cids) & stu_id.isna()] = "the SSID belongs to more than one Aeries student"

    dup_ssid = _duplicated(ssid)
    dup_local = _duplicated(local)
    dup_target = stu_id.notna() & stu_id.duplicated(keep=False)
    duplicate = dup_ssid | dup_local | dup_target
    outcome[duplicate] = DUPLICATE
    reason[dup_target] = "two rows match the same Aeries student"
    reason[dup_local] = "the STUDENT_ID appears more than once in the file"
    reason[dup_ssid] = "the SSID appears more than once in the file"

    errors = frame["__line__"].isin(error_lines)
    outcome[errors] = ERROR
    reason[errors] = "the row has validation errors"

    frame["STU_ID"] = stu_id.where(outcome == MATCHED).astype("Int64")
    frame["MATCHED_BY"] = pd.Series(pd.NA, index=frame.index, dtype="str")
    frame.loc[(outcome == MATCHED) & via_ssid.notna(), "MATCHED_BY"] = "SSID"
    frame.loc[(outcome == MATCHED) & via_ssid.isna(), "MATCHED_BY"] = "STUDENT_ID"
    frame["OUTCOME"] = outcome
    frame["REASON"] = reason
    return MatchResult(frame)


def match_services(
    table_b: pd.DataFrame, error_lines: set[int], students: pd.DataFrame, identity: list[str], key: list[str]
) -> pd.DataFrame:
    """Give each tableB row its Aeries student (through its tableA row) and an outcome.

    ``students`` is the matched tableA frame (with ``STU_ID`` and ``OUTCOME``). A services row
    whose tableA student was not matched is unmatched; two rows for the same student and
    the same service identity (service, provider, location) are duplicates.
    """
    frame = table_b.copy()
    linkable = all(k in students.columns for k in key) and all(k in frame.columns for k in key)
    if linkable:
        a = students.loc[students["OUTCOME"] == MATCHED, [*key, "STU_ID"]]
        # A blank key links nothing (pandas would join blank to blank).
        a = a.dropna(subset=key).drop_duplicates(key)
        merged = frame.merge(a, on=key, how="left", validate="many_to_one")
        merged.index = frame.index
        frame["STU_ID"] = merged["STU_ID"].astype("Int64")
    else:  # e.g. a tableA keyed by SSID only: its services cannot be tied to its students
        frame["STU_ID"] = pd.Series(pd.NA, index=frame.index, dtype="Int64")
    outcome = pd.Series(MATCHED, index=frame.index, dtype="str")
    reason = pd.Series("", index=frame.index, dtype="str")
    outcome[frame["STU_ID"].isna()] = UNMATCHED
    reason[frame["STU_ID"].isna()] = (
        "the student's tableA row was not imported (unmatched, duplicate or in error)"
        if linkable
        else f"tableA has no {' + '.join(key)} column to link services to its students"
    )
    ident = [c for c in identity if c in frame.columns]
    dup = frame["STU_ID"].notna() & frame.duplicated(["STU_ID", *ident], keep=False)
    outcome[dup] = DUPLICATE
    reason[dup] = "the same service, provider and location appear twice for this student"
    errors = frame["__line__"].isin(error_lines)
    outcome[errors] = ERROR
    reason[errors] = "the row has validation errors"
    frame["OUTCOME"] = outcome
    frame["REASON"] = reason
    return frame
