"""Synthetic CASEMIS files and matching Aeries STU rows, for demos, tests and benchmarks.

No real student data exists anywhere in this project: every name, ID and date here comes
from a seeded random generator, with code distributions shaped like a real SELPA's
(mostly IEPs, specific learning disability and speech the most common disabilities, about
four services per student). A few students are deliberately absent from STU so the
unmatched path is exercised, and some students have two STU rows (two schools).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from casemis.contract import load_contract

log = logging.getLogger(__name__)

FIRST_NAMES = (
    "Sofia Mateo Olivia Liam Isabella Noah Camila Ethan Mia Daniel Emily Sebastian Ava Julian Emma Diego "
    "Abigail Gabriel Valentina Adrian Chloe Lucas Aria Elijah Zoe Aiden Luna Carlos Layla Angel Nora Leo "
    "Hannah Isaac Ximena Ryan Victoria Jayden Grace Nathan Maya Andrew Lily Joshua Ella Anthony Stella "
    "David Ruby Christopher Hazel Jose Naomi Kevin Alice Jesus Leah Brandon Mila Juan Aaliyah Miguel "
    "Yasmin Thanh Minh Wei Ananya Priya Arjun Mei Hiroshi Kenji Jae Min Fatima Omar Amira Dmitri Anika"
).split()
LAST_NAMES = (
    "Garcia Hernandez Lopez Martinez Gonzalez Rodriguez Perez Sanchez Ramirez Torres Flores Rivera Gomez "
    "Diaz Reyes Cruz Morales Ortiz Gutierrez Chavez Ramos Ruiz Alvarez Mendoza Castillo Jimenez Vasquez "
    "Smith Johnson Williams Brown Jones Miller Davis Wilson Anderson Thomas Taylor Moore Jackson Martin "
    "Lee Thompson White Harris Clark Lewis Robinson Walker Young Allen King Wright Scott Green Baker Adams "
    "Nguyen Tran Le Pham Kim Park Chen Wang Li Zhang Liu Patel Singh Shah Kumar Yamamoto Tanaka Santos "
    "Reyes-Soto O'Brien McAllister Nunez Pena Ibarra Zamora Villanueva"
).split()
# (code, weight) pairs: shaped like published SELPA distributions, not exact.
DISABILITY = (
    ("290", 36),
    ("240", 20),
    ("320", 15),
    ("280", 12),
    ("210", 5),
    ("260", 3),
    ("220", 2),
    ("310", 2),
    ("270", 1),
    ("250", 1),
    ("230", 1),
    ("330", 0.5),
    ("281", 1),
    ("300", 0.1),
    ("200", 0.4),
)
PLAN_TYPE = (("10", 90), ("15", 3), ("20", 2), ("30", 0.5), ("70", 1), ("80", 1), ("90", 2.5))
SERVICES = (
    ("330", 30),
    ("415", 25),
    ("510", 8),
    ("450", 6),
    ("535", 5),
    ("425", 4),
    ("515", 4),
    ("860", 3),
    ("820", 3),
    ("460", 2),
    ("720", 1),
    ("725", 1),
    ("610", 1),
    ("850", 2),
    ("900", 1),
    ("240", 1),
    ("210", 1),
    ("250", 1),
)


@dataclass(frozen=True)
class GeneratedFiles:
    """Paths and row counts of one generated set."""

    table_a: Path
    table_b: Path
    stu: Path
    students: int
    services: int
    unmatched: int


def _pick(rng: np.random.Generator, pairs: tuple[tuple[str, float], ...], n: int) -> np.ndarray:
    codes = np.array([c for c, _ in pairs])
    weights = np.array([w for _, w in pairs], dtype=float)
    return rng.choice(codes, size=n, p=weights / weights.sum())


def _dates(rng: np.random.Generator, start: str, end: str, n: int) -> np.ndarray:
    lo, hi = np.datetime64(start), np.datetime64(end)
    days = rng.integers(0, int((hi - lo).astype(int)) + 1, size=n)
    return pd.to_datetime(lo + days.astype("timedelta64[D]")).strftime("%Y%m%d").to_numpy()


def _blank_unless(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    return np.where(keep, values, "")


def generate(students: int, out: Path, seed: int = 42, unmatched_share: float = 0.01) -> GeneratedFiles:
    """Write ``tableA.csv``, ``tableB.csv`` and ``stu.csv`` for ``students`` students into ``out``."""
    if students < 1:
        raise ValueError("students must be at least 1")
    rng = np.random.default_rng(seed)
    n = students
    out.mkdir(parents=True, exist_ok=True)
    perm_ids = (100000 + rng.permutation(n * 3)[:n]).astype(str)
    ssids = (1000000000 + rng.permutation(8_999_999_999 // 1000)[:n] * 997 % 8_999_999_999).astype(str)
    first = rng.choice(FIRST_NAMES, size=n)
    last = rng.choice(LAST_NAMES, size=n)
    birth = _dates(rng, "2004-09-01", "2023-08-31", n)
    plan = _pick(rng, PLAN_TYPE, n)
    dis1 = _pick(rng, DISABILITY, n)
    dis1 = np.where(plan == "90", "200", dis1)
    has_dis2 = rng.random(n) < 0.15
    dis2 = _blank_unless(_pick(rng, DISABILITY[:-1], n), has_dis2 & (plan != "90"))
    grade = rng.choice([f"{g:02d}" for g in range(1, 13)] + ["13", "15", "16", "17", "18"], size=n)
    exited = rng.random(n) < 0.06
    exit_date = _blank_unless(_dates(rng, "2017-07-01", "2017-11-30", n), exited)
    exit_reason = _blank_unless(rng.choice(["70", "71", "72", "73", "74", "76", "78"], size=n), exited)
    ssid_blank = rng.random(n) < 0.03
    races = ["100", "201", "203", "204", "205", "299", "400", "600", "700"]
    table_a = {
        "REPT_DATE": np.full(n, "20171201"),
        "SELPA_CODE": np.full(n, "3410"),
        "SELPA_FROM": _blank_unless(np.full(n, "3400"), rng.random(n) < 0.05),
        "DIST_SERV": np.full(n, "3467314"),
        "DIST_RESI": rng.choice(["3467314", "3467322", "3467330"], size=n, p=[0.9, 0.06, 0.04]),
        "SCH_CODE": rng.choice([f"{6000000 + i * 137:07d}" for i in range(40)], size=n),
        "SCH_TYPE": rng.choice(["10", "20", "30", "40"], size=n),
        "LAST_NAME": last,
        "FIRST_NAME": first,
        "STUDENT_ID": perm_ids,
        "SSID": _blank_unless(ssids, ~ssid_blank),
        "FILLER": np.full(n, ""),
        "BIRTHDATE": birth,
        "GENDER": rng.choice(["M", "F", "X"], size=n, p=[0.66, 0.335, 0.005]),
        "ETHNICITY": rng.choice(["500", "501", "900"], size=n, p=[0.5, 0.48, 0.02]),
        "RACE1": rng.choice(races, size=n),
        "RACE2": _blank_unless(rng.choice(races, size=n), rng.random(n) < 0.1),
        "RACE3": np.full(n, ""),
        "EL": rng.choice(["Y", "N"], size=n, p=[0.3, 0.7]),
        "NATIVE_LANG": rng.choice(
            ["00", "01", "02", "03", "07", "11"], size=n, p=[0.6, 0.3, 0.03, 0.03, 0.02, 0.02]
        ),
        "EARLY_INT": rng.choice(["Y", "N"], size=n, p=[0.05, 0.95]),
        "IN_RFRDATE": np.full(n, ""),
        "IN_RFRBY": np.full(n, ""),
        "IN_PRNTCST": np.full(n, ""),
        "IN_INTEVAL": np.full(n, ""),
        "RFRDATE": _dates(rng, "2008-01-01", "2017-10-31", n),
        "REFR_BY": rng.choice(["10", "20", "30", "40", "90"], size=n),
        "PRNT_CSNT": _dates(rng, "2008-01-01", "2017-10-31", n),
        "INITEVAL": _dates(rng, "2008-01-01", "2017-11-15", n),
        "EVLDLAY": _blank_unless(rng.choice(["10", "20", "30", "40", "90"], size=n), rng.random(n) < 0.05),
        "TBDLAY": np.full(n, ""),
        "PLAN_TYPE": plan,
        "MIGRANT": rng.choice(["Y", "N"], size=n, p=[0.02, 0.98]),
        "RESID_STAT": rng.choice(["10", "20", "30", "40"], size=n, p=[0.94, 0.03, 0.02, 0.01]),
        "ENTRY_DATE": _dates(rng, "2008-01-01", "2017-11-15", n),
        "LAST_IEP": _dates(rng, "2016-12-01", "2017-11-30", n),
        "LAST_EVAL": _dates(rng, "2014-12-01", "2017-11-30", n),
        "DISABILIT1": dis1,
        "DISABILIT2": dis2,
        "SOLE_LOW": rng.choice(["Y", "N"], size=n, p=[0.03, 0.97]),
        "INFANT_SET": np.full(n, ""),
        "FEDSET_INF": np.full(n, ""),
        "FEDSET_PRS": np.full(n, ""),
        "FEDSET_SCH": rng.choice(["400", "450", "460", "470"], size=n, p=[0.9, 0.05, 0.03, 0.02]),
        "IN_REGCLS": rng.integers(0, 101, size=n).astype(str),
        "GRADE": grade,
    }
    for i in range(1, 9):
        table_a[f"TRAN_REG{i}"] = rng.choice(["10", "20"], size=n, p=[0.9, 0.1])
    table_a["SPEC_TRANS"] = rng.choice(["Y", "N"], size=n, p=[0.08, 0.92])
    table_a["PARINPUT"] = rng.choice(["10", "20", "30"], size=n)
    for i in range(1, 7):
        table_a[f"FILLER{i}"] = np.full(n, "")
    table_a["GRAD_PLAN"] = rng.choice(["10", "20"], size=n, p=[0.8, 0.2])
    table_a["EXIT_DATE"] = exit_date
    table_a["EXIT_RESON"] = exit_reason
    table_a["IEPDELAY"] = _blank_unless(
        rng.choice(["10", "20", "30", "40", "90"], size=n), rng.random(n) < 0.03
    )
    table_a["TRIDELAY"] = np.full(n, "")
    frame_a = pd.DataFrame(table_a, columns=load_contract("table_a").field_names)

    # Services: plan types 70/80/90 have none; everyone else has 1-9 (about 4 on average).
    needs = ~np.isin(plan, ["70", "80", "90"])
    per_student = np.where(needs, np.clip(rng.poisson(4.4, size=n), 1, 9), 0)
    idx = np.repeat(np.arange(n), per_student)
    m = len(idx)
    frame_b = pd.DataFrame(
        {
            "REPT_DATE": np.full(m, "20171201"),
            "SELPA_CODE": np.full(m, "3410"),
            "STUDENT_ID": perm_ids[idx],
            "SSID": table_a["SSID"][idx],
            "SERVICE": _pick(rng, SERVICES, m),
            "SERV_PROV": rng.choice(["100", "200", "300", "400"], size=m, p=[0.7, 0.15, 0.1, 0.05]),
            "SERV_LOC": rng.choice(["100", "200", "300", "400", "500"], size=m),
            "SERV_FREQ": rng.choice(["1", "2", "3", "4"], size=m),
            "SERV_DUR": rng.choice(["15", "20", "30", "45", "60", "90", "120"], size=m),
        },
        columns=load_contract("table_b").field_names,
    )
    # A student may get the same service from two providers, but never the exact same
    # (service, provider, location) twice: that would be a duplicate service row.
    frame_b = frame_b.drop_duplicates(subset=["STUDENT_ID", "SERVICE", "SERV_PROV", "SERV_LOC"])

    unmatched = rng.random(n) < unmatched_share
    two_schools = (rng.random(n) < 0.02) & ~unmatched
    stu = pd.DataFrame(
        {
            "ID": perm_ids,
            "CID": ssids,
            "SC": rng.choice([str(s) for s in range(1, 41)], size=n),
            "SN": np.arange(1, n + 1).astype(str),
            "LN": last,
            "FN": first,
            "BD": pd.to_datetime(pd.Series(birth), format="%Y%m%d").dt.strftime("%Y-%m-%d").to_numpy(),
        }
    )[~unmatched]
    second = stu[two_schools[~unmatched]].copy()
    second["SC"] = "99"
    second["SN"] = (np.arange(len(second)) + n + 1).astype(str)
    stu = pd.concat([stu, second], ignore_index=True)

    paths = GeneratedFiles(
        table_a=out / "tableA.csv",
        table_b=out / "tableB.csv",
        stu=out / "stu.csv",
        students=n,
        services=len(frame_b),
        unmatched=int(unmatched.sum()),
    )
    frame_a.to_csv(paths.table_a, index=False, lineterminator="\r\n")
    frame_b.to_csv(paths.table_b, index=False, lineterminator="\r\n")
    stu.to_csv(paths.stu, index=False)
    log.info("generated %d students, %d services (%d not in STU)", n, len(frame_b), paths.unmatched)
    return paths
