"""The CASEMIS file contract: YAML schemas in ``include/schemas`` loaded into Pandera.

Only this module names CASEMIS headers in code, and it names almost none: field names,
code sets, widths and alternative headers are data in the YAML files. Code holds the rules
the YAML cannot express: how headers are matched, which header problems are fatal.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import pandera.pandas as pa
import yaml

import casemis.checks  # noqa: F401  (registers the custom checks used by the YAML)
from casemis.paths import schema_path

FileKind = Literal["table_a", "table_b"]
FILE_KINDS: tuple[FileKind, ...] = ("table_a", "table_b")


@dataclass(frozen=True)
class FieldSpec:
    """One field of a file layout, in file order."""

    name: str
    field_id: str
    title: str
    aliases: tuple[str, ...]
    required: bool


@dataclass(frozen=True)
class Contract:
    """The layout of one CASEMIS file kind and the Pandera schema that checks its rows."""

    kind: FileKind
    label: str
    schema: pa.DataFrameSchema
    fields: tuple[FieldSpec, ...]
    meta: dict[str, Any]

    @property
    def field_names(self) -> list[str]:
        """Canonical header names, in file order."""
        return [f.name for f in self.fields]

    def spec(self, name: str) -> FieldSpec:
        """Return the field called ``name`` (canonical)."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def meta_list(self, key: str) -> list[str]:
        """Return a list-valued metadata entry (empty when absent)."""
        return list(self.meta.get(key) or [])


def header_key(text: str) -> str:
    """Normalise a header for matching: no BOM/quotes/surrounding spaces, upper case,
    inner runs of spaces or hyphens as one underscore."""
    cleaned = text.replace("\ufeff", "").strip().strip('"').strip()
    return re.sub(r"[\s\-]+", "_", cleaned).upper()


@functools.cache
def load_contract(kind: FileKind) -> Contract:
    """Load and cache the contract of ``kind`` from ``include/schemas/<kind>.yaml``."""
    if kind not in FILE_KINDS:
        raise ValueError(f"unknown file kind {kind!r}; expected one of {', '.join(FILE_KINDS)}")
    path = schema_path(kind)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    schema = pa.DataFrameSchema.from_yaml(path)
    meta = dict(raw.get("metadata") or {})
    field_meta = meta.get("fields") or {}
    fields = []
    for name, column in (raw.get("columns") or {}).items():
        extra = field_meta.get(name) or {}
        fields.append(
            FieldSpec(
                name=name,
                field_id=str(extra.get("id", "")),
                title=str(column.get("title") or name),
                aliases=tuple(header_key(a) for a in extra.get("aliases") or ()),
                required=not column.get("nullable", True),
            )
        )
    return Contract(
        kind=kind, label=str(meta.get("file_label") or kind), schema=schema, fields=tuple(fields), meta=meta
    )


@dataclass
class HeaderResolution:
    """How the headers of one file map to the contract's fields.

    ``columns[i]`` is the canonical field for the file's column ``i`` (``None`` when the
    header is not recognised). ``fatal`` problems reject the whole file.
    """

    columns: list[str | None]
    unknown: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    fatal: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def resolve_headers(contract: Contract, headers: list[str]) -> HeaderResolution:
    """Match a file's header row to the contract, like the Aeries import does.

    Matching ignores case and surrounding spaces and accepts the alternative names listed in
    the YAML. An unknown header is a warning; a header that appears twice, or a file without
    its key headers, is fatal, and the message lists the headers that were not recognised.
    """
    lookup: dict[str, str] = {}
    for spec in contract.fields:
        lookup[header_key(spec.name)] = spec.name
        for alias in spec.aliases:
            lookup.setdefault(alias, spec.name)

    columns: list[str | None] = []
    seen: dict[str, int] = {}
    result = HeaderResolution(columns=columns)
    for position, header in enumerate(headers, start=1):
        name = lookup.get(header_key(header))
        if name is None:
            columns.append(None)
            shown = header.strip() or "(blank)"
            result.unknown.append(shown)
            result.warnings.append(f"column {position}: unknown header {shown!r} is ignored")
            continue
        if name in seen:
            result.fatal.append(
                f"header {name} appears twice (columns {seen[name]} and {position}); remove one of them"
            )
        seen[name] = position
        columns.append(name)

    present = set(seen)
    result.missing = [f.name for f in contract.fields if f.name not in present]
    any_keys = contract.meta_list("key_headers_any")
    all_keys = contract.meta_list("key_headers_all")
    bad = f" Headers not recognised: {', '.join(result.unknown)}." if result.unknown else ""
    if any_keys and not present.intersection(any_keys):
        result.fatal.append(f"{contract.label} lacks the key headers: it needs {' or '.join(any_keys)}.{bad}")
    missing_keys = [k for k in all_keys if k not in present]
    if missing_keys:
        result.fatal.append(f"{contract.label} lacks the key headers {', '.join(missing_keys)}.{bad}")
    key_names = set(any_keys) | set(all_keys)
    for name in result.missing:
        if name in key_names:
            continue
        spec = contract.spec(name)
        result.warnings.append(
            f"header {name} ({spec.field_id}) is missing; the field is not checked or imported"
        )
    return result
