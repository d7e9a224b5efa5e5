"""The ``init-db`` and ``import`` commands (kept apart from ``cli`` so ``--help`` stays fast)."""

from __future__ import annotations

import argparse
import json
import sys
import uuid

from casemis.paths import resolve

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _engine(url: str):  # type: ignore[no-untyped-def]
    from casemis.db import engine_from_url

    return engine_from_url(url)


def cmd_init_db(args: argparse.Namespace) -> int:
    """Create the demo Aeries tables and seed STU."""
    from casemis.seed import init_db

    if args.stu is not None and not args.stu.is_file():
        print(f"python -m casemis init-db: error: no such file: {args.stu}", file=sys.stderr)
        return EXIT_USAGE
    engine = _engine(args.target)
    seeded = init_db(engine, args.stu)
    print(f"tables ready in {engine.url.render_as_string(hide_password=True)}; {seeded} STU rows loaded")
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    """Run the whole import into ``--target`` and print the outcome."""
    from casemis.pipeline import RunContext, now_iso, run_all

    for path in (args.table_a, args.table_b):
        if path is not None and not path.is_file():
            print(f"python -m casemis import: error: no such file: {path}", file=sys.stderr)
            return EXIT_USAGE
    run_id = f"cli__{now_iso().replace(':', '')}__{uuid.uuid4().hex[:6]}"
    ctx = RunContext(
        run_id=run_id,
        staging_root=str(resolve("var/staging")),
        report_root=str(resolve("var/reports")),
        report_path=str(args.report_dir or ""),
        trigger="cli",
        dry_run=args.dry_run,
        on_error=args.on_error,
        started_at=now_iso(),
        include_services=args.table_b is not None,
    )
    summary = run_all(ctx, _engine(args.target), args.table_a, args.table_b)
    report_dir = str(ctx.report_dir)
    counts = summary["counts"]
    if args.json:
        doc = {
            "status": summary["status"],
            "dry_run": summary["dry_run"],
            "table_a": counts.get("table_a"),
            "table_b": counts.get("table_b"),
            "report_dir": report_dir,
        }
        print(json.dumps(doc))
    else:
        print(summary["message"])
        for kind in ("table_a", "table_b"):
            if counts.get(kind):
                print(f"  {kind}: " + ", ".join(f"{k} {v}" for k, v in counts[kind].items()))
        print(f"report: {report_dir}")
    return EXIT_OK if summary["status"] == "success" else EXIT_FAILED


HANDLERS = {"init-db": cmd_init_db, "import": cmd_import}
