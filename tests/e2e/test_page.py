"""End to end: the CASEMIS Import page in a real Airflow, driven with headless Chromium.

Starts Airflow 3 (API server, scheduler with the LocalExecutor, dag-processor; SQLite) with
the repository's DAG and plugin, a loopback SMTP server for the report email and a SQLite
"Aeries" target seeded with STU. Then, as a person would: log in, open the page from the
Airflow navigation, save settings (a wrong email address first), enable, change and
disable the scheduled process and check what Airflow's REST API reports for the DAG,
upload a tableA/tableB pair and watch the run succeed and the CSE/CSV rows appear, and
press "Import CASEMIS File". The Variable is also edited through the REST API, the way
an administrator can do without the page. A separate test checks that every endpoint
refuses requests without a login, without permission, without the CSRF token or from
another site.

Screenshots go to test-artifacts/e2e/. With CASEMIS_UPDATE_DOCS_SCREENSHOT=1 the page's
screenshot is also copied to docs/screenshots/casemis-page.png.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa

from casemis.generate import generate
from casemis.seed import init_db
from tests.e2e.airflow_server import ROOT, AirflowStack, airflow_stack, wait_until
from tests.smtp_server import SmtpSink, smtp_sink

pytestmark = pytest.mark.e2e

ARTIFACTS = ROOT / "test-artifacts" / "e2e"
DOCS_SCREENSHOT = ROOT / "docs" / "screenshots" / "casemis-page.png"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LA = ZoneInfo("America/Los_Angeles")
RECIPIENT = "sped-office@example.org"
ENDPOINTS = ("settings", "schedule", "import", "upload")


@dataclass
class World:
    """Everything the tests share: the running Airflow and the district's side of things."""

    stack: AirflowStack
    smtp: SmtpSink
    target_url: str
    dropbox: Path  # the "local folder" the vendor drops files into
    files: Path  # a generated tableA/tableB pair
    uploads: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Airflow + SMTP sink + a seeded SQLite target; stopped after the module's tests."""
    base = tmp_path_factory.mktemp("casemis-e2e")
    files = base / "generated"
    generated = generate(25, files, seed=11, unmatched_share=0.0)
    target = base / "aeries.db"
    engine = sa.create_engine(f"sqlite:///{target}")
    init_db(engine, generated.stu)
    engine.dispose()
    dropbox = base / "dropbox"
    dropbox.mkdir()
    for name in ("tableA.csv", "tableB.csv"):
        shutil.copy(files / name, dropbox / name)
    uploads = base / "uploads"
    with smtp_sink() as sink:
        extra = {
            "AIRFLOW_CONN_CASEMIS_TARGET": json.dumps({"conn_type": "sqlite", "host": str(target)}),
            "AIRFLOW_CONN_SMTP_DEFAULT": sink.airflow_conn_json(),
            "CASEMIS_STAGING_DIR": str(base / "staging"),
            "CASEMIS_REPORT_DIR": str(base / "reports"),
            "CASEMIS_MANUAL_DIR": str(uploads),
            "CASEMIS_STABLE_SECONDS": "0",
        }
        with airflow_stack(extra) as stack:
            yield World(stack, sink, f"sqlite:///{target}", dropbox, files, uploads)


# --------------------------------------------------------------------------- helpers


def _details(client: httpx.Client) -> dict:
    response = client.get("/api/v2/dags/casemis_import/details")
    response.raise_for_status()
    return response.json()


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def _version(html: str) -> str:
    match = re.search(r'name="version" value="([^"]*)"', html)
    assert match
    return match.group(1)


def _variable(client: httpx.Client) -> dict | None:
    response = client.get("/api/v2/variables/casemis_config")
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return json.loads(response.json()["value"])


def _table_count(url: str, table: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f'SELECT COUNT(*) FROM "{table}"')).scalar_one())
    finally:
        engine.dispose()


def _wait_run(world: World, client: httpx.Client, run_id: str, timeout: float = 150) -> dict:
    def finished() -> dict | None:
        run = client.get(f"/api/v2/dags/casemis_import/dagRuns/{run_id}").json()
        return run if run.get("state") in ("success", "failed") else None

    run = wait_until(finished, timeout, f"run {run_id}", world.stack)
    if run["state"] != "success":
        tis = client.get(f"/api/v2/dags/casemis_import/dagRuns/{run_id}/taskInstances").json()
        states = {t["task_id"]: t["state"] for t in tis["task_instances"]}
        pytest.fail(f"run {run_id} ended {run['state']}: {states}\n{world.stack.logs(80)}")
    return run


# --------------------------------------------------------------------------- security


def test_every_endpoint_refuses_strangers_and_forgeries(world: World) -> None:
    """No login: 401 (or the login page); no permission: 403; no/foreign CSRF token or another site: 403."""
    url = world.stack.url
    with httpx.Client(base_url=url, timeout=30) as anonymous:
        page = anonymous.get("/casemis/")
        assert page.status_code == 303 and "/auth/login" in page.headers["location"]
        for name in ENDPOINTS:
            assert anonymous.post(f"/casemis/{name}", data={"action": "enable"}).status_code == 401, name
        for path in ("/casemis/docs", "/casemis/openapi.json", "/casemis/redoc"):
            assert anonymous.get(path).status_code in (401, 403, 404), path
    with httpx.Client(base_url=url, timeout=30, cookies={"_token": "not-a-jwt"}) as forged:
        assert forged.get("/casemis/").status_code in (303, 401, 403)
        assert forged.post("/casemis/import").status_code in (401, 403)

    with world.stack.api("viewer") as viewer, world.stack.api("admin") as admin:
        # A viewer sees the page with its buttons off, and is refused every change.
        seen = viewer.get("/casemis/")
        assert seen.status_code == 200
        assert re.search(r'<button id="save" type="submit"\s+disabled', seen.text)
        viewer_token = _csrf(seen.text)
        for name in ENDPOINTS:
            refused = viewer.post(f"/casemis/{name}", data={"csrf_token": viewer_token, "action": "enable"})
            assert refused.status_code == 403, name

        mine = admin.get("/casemis/")
        token = _csrf(mine.text)
        assert 'action="/casemis/settings"' in mine.text
        # Only the Airflow UI (same origin) may frame the page; nothing is cached.
        assert mine.headers["x-frame-options"] == "SAMEORIGIN"
        assert "frame-ancestors 'self'" in mine.headers["content-security-policy"]
        assert mine.headers["cache-control"] == "no-store"
        # The admin without a token, with the viewer's token, or from another site: refused.
        assert admin.post("/casemis/schedule", data={"action": "enable"}).status_code == 403
        assert (
            admin.post("/casemis/schedule", data={"action": "enable", "csrf_token": viewer_token}).status_code
            == 403
        )
        assert (
            admin.post(
                "/casemis/schedule",
                data={"action": "enable", "csrf_token": token},
                headers={"Origin": "https://evil.example"},
            ).status_code
            == 403
        )
        assert (
            admin.post(
                "/casemis/import",
                data={"csrf_token": token},
                headers={"Referer": "https://evil.example/form.html"},
            ).status_code
            == 403
        )
        # Nothing above changed anything: no settings saved, no run created.
        assert _variable(admin) is None
        assert admin.get("/api/v2/dags/casemis_import/dagRuns").json()["total_entries"] == 0
        # ... and the same request from this site with the admin's own token works.
        ok = admin.post(
            "/casemis/schedule", data={"action": "disable", "csrf_token": token}, headers={"Origin": url}
        )
        assert ok.status_code == 303
        assert _variable(admin) == {"enabled": False}


# --------------------------------------------------------------------------- the page


def test_page_end_to_end(world: World) -> None:
    """Settings, schedule, one-time upload and import now, through the page in Chromium."""
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    url = world.stack.url
    client = world.stack.api("admin")
    assert _details(client)["is_paused"] is False, "the DAG must be created unpaused"

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1050})
            page = context.new_page()
            page.set_default_timeout(30_000)

            # Log in to Airflow, then open the page from the navigation.
            page.goto(f"{url}/plugin/casemis-import")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", world.stack.passwords["admin"])
            page.click("button[type=submit]")
            page.wait_for_url("**/plugin/casemis-import**")
            page.goto(f"{url}/")
            page.get_by_role("link", name="CASEMIS Import").click()
            page.wait_for_url("**/plugin/casemis-import**")
            frame = page.frame_locator("iframe[title='CASEMIS Import']")
            expect(frame.locator("#schedule-status")).to_have_text("Disabled")
            page.screenshot(path=ARTIFACTS / "01-page.png")

            def save(expect_ok: bool = True) -> None:
                frame.locator("#save").click()
                if expect_ok:
                    expect(frame.locator("#flash")).to_contain_text("Settings saved")

            # A wrong address is refused with a clear message and nothing is saved.
            frame.locator("#loc-local").check()
            frame.locator("input[name=local_path]").fill(str(world.dropbox))
            frame.locator("input[name=recipients]").fill(f"{RECIPIENT}, not-an-email")
            save(expect_ok=False)
            expect(frame.locator("#form-errors")).to_contain_text("Report email addresses")
            expect(frame.locator("#form-errors")).to_contain_text("'not-an-email' is not an email address")
            page.screenshot(path=ARTIFACTS / "02-validation-error.png")
            assert (_variable(client) or {}).get("recipients") is None

            # Every day, at a time two minutes ago: a slot that has just passed.
            now_la = dt.datetime.now(LA)
            past = (now_la - dt.timedelta(minutes=2)).strftime("%H:%M")
            frame.locator("input[name=recipients]").fill(RECIPIENT)
            for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun"):
                frame.locator(f"input[name=days][value={day}]").check()
            frame.locator("input[name=time]").fill(past)
            frame.locator("input[name=timezone]").fill("America/Los_Angeles")
            save()
            stored = _variable(client)
            assert stored["local_path"] == str(world.dropbox) and stored["recipients"] == [RECIPIENT]
            assert stored["enabled"] is False and stored["time"] == past

            # Enabling does not run the slot two minutes ago: the next run is tomorrow's.
            frame.locator("#toggle-schedule").click()
            expect(frame.locator("#flash")).to_contain_text("scheduled process is enabled")
            expect(frame.locator("#schedule-status")).to_have_text("Enabled")
            minute, hour = int(past[3:]), int(past[:2])
            details = wait_until(
                lambda: (d := _details(client))["timetable_summary"] == f"{minute} {hour} * * *" and d,
                60,
                "the enabled schedule in Airflow",
                world.stack,
            )
            next_run = dt.datetime.fromisoformat(details["next_dagrun_run_after"])
            assert next_run > dt.datetime.now(dt.UTC) + dt.timedelta(hours=23)
            assert next_run.astimezone(LA).strftime("%H:%M") == past
            time.sleep(6)  # a scheduler loop or two: it must not create a run for the passed slot
            runs = client.get("/api/v2/dags/casemis_import/dagRuns").json()
            assert runs["total_entries"] == 0, runs

            # Change the schedule while enabled: Mon/Wed/Fri 18:30 Los Angeles time.
            for day in ("tue", "thu", "sat", "sun"):
                frame.locator(f"input[name=days][value={day}]").uncheck()
            frame.locator("input[name=time]").fill("18:30")
            save()
            expect(frame.locator("#schedule-description")).to_have_text(
                "At 18:30, only on Monday, Wednesday, and Friday (America/Los_Angeles)"
            )
            details = wait_until(
                lambda: (d := _details(client))["timetable_summary"] == "30 18 * * 1,3,5" and d,
                60,
                "the new schedule in Airflow",
                world.stack,
            )
            assert details["timetable_description"] == "At 18:30, only on Monday, Wednesday, and Friday"
            local = dt.datetime.fromisoformat(details["next_dagrun_run_after"]).astimezone(LA)
            assert (local.strftime("%H:%M"), local.strftime("%a")) in {
                ("18:30", d) for d in ("Mon", "Wed", "Fri")
            }
            page.reload()
            frame = page.frame_locator("iframe[title='CASEMIS Import']")
            expect(frame.locator("#airflow-schedule")).to_contain_text("Scheduled; next run")
            expect(frame.locator("#next-run")).to_contain_text("18:30 P")  # PST or PDT
            page.screenshot(path=ARTIFACTS / "03-enabled.png")

            # Disable: Airflow drops the schedule; the DAG stays unpaused.
            frame.locator("#toggle-schedule").click()
            expect(frame.locator("#flash")).to_contain_text("scheduled process is disabled")
            details = wait_until(
                lambda: (d := _details(client))["timetable_summary"] is None and d,
                60,
                "the schedule removed in Airflow",
                world.stack,
            )
            assert details["next_dagrun_run_after"] is None and details["is_paused"] is False

            # One-time import while the schedule is disabled: upload tableA + tableB.
            frame.locator("input[name=table_a]").set_input_files(world.files / "tableA.csv")
            frame.locator("input[name=table_b]").set_input_files(world.files / "tableB.csv")
            frame.locator("#upload").click()
            expect(frame.locator("#flash")).to_contain_text("uploaded and their import has started")
            upload_run = client.get("/api/v2/dags/casemis_import/dagRuns?order_by=-run_after").json()
            run = upload_run["dag_runs"][0]
            assert run["run_type"] == "manual" and run["triggering_user_name"] == "admin"
            conf = run["conf"]
            stored_a = Path(conf["table_a_path"])
            assert stored_a.parent.parent == world.uploads and stored_a.name == "tableA.csv"
            assert stored_a.read_bytes() == (world.files / "tableA.csv").read_bytes()
            _wait_run(world, client, run["dag_run_id"])
            cse, csv_rows = _table_count(world.target_url, "CSE"), _table_count(world.target_url, "CSV")
            assert cse > 0 and csv_rows > 0
            page.reload()
            frame = page.frame_locator("iframe[title='CASEMIS Import']")
            row = frame.locator(f"tr.run[data-run-id='{run['dag_run_id']}']")
            expect(row.locator(".state")).to_have_text("success")
            expect(row.locator(".result")).to_contain_text(re.compile(rf"Students: 25 read, .*\b{cse} added"))
            link = row.locator("a")
            assert link.get_attribute("href").startswith("/dags/casemis_import/runs/manual__")
            assert link.get_attribute("target") == "_top"
            wait_until(lambda: world.smtp.messages, 30, "the report email", world.stack)
            assert RECIPIENT in world.smtp.envelope_recipients[0]
            page.screenshot(path=ARTIFACTS / "04-run-succeeded.png")
            full = context.new_page()
            full.goto(f"{url}/casemis/")
            full.screenshot(path=ARTIFACTS / "05-page-full.png", full_page=True)
            full.close()

            # "Import CASEMIS File": a manual run with the saved settings (the local folder).
            frame.locator("#import-now").click()
            expect(frame.locator("#flash")).to_contain_text("Import started with the saved settings")
            href = frame.locator("#flash a").get_attribute("href")
            now_run_id = href.rsplit("/", 1)[-1]
            run = client.get(f"/api/v2/dags/casemis_import/dagRuns/{now_run_id}").json()
            assert run["conf"] == {} and run["run_type"] == "manual"
            _wait_run(world, client, now_run_id)
            assert _table_count(world.target_url, "CSE") == cse  # the same files: nothing new

            # Switch the schedule back on; the page then shows Airflow's next run and both runs.
            page.reload()
            frame = page.frame_locator("iframe[title='CASEMIS Import']")
            frame.locator("#toggle-schedule").click()
            expect(frame.locator("#schedule-status")).to_have_text("Enabled")
            wait_until(
                lambda: _details(client)["timetable_summary"] == "30 18 * * 1,3,5",
                60,
                "the re-enabled schedule in Airflow",
                world.stack,
            )
            page.goto(f"{url}/plugin/casemis-import")
            frame = page.frame_locator("iframe[title='CASEMIS Import']")
            expect(frame.locator("#airflow-schedule")).to_contain_text("Scheduled; next run")
            expect(frame.locator("tr.run .state")).to_have_text(["success", "success"])
            page.set_viewport_size({"width": 1400, "height": 1500})
            page.screenshot(path=ARTIFACTS / "06-enabled-with-runs.png")
            if os.environ.get("CASEMIS_UPDATE_DOCS_SCREENSHOT") == "1":
                DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ARTIFACTS / "06-enabled-with-runs.png", DOCS_SCREENSHOT)
        finally:
            browser.close()

    # Without the page: the Variable edited through the REST API reaches the schedule too.
    value = dict(_variable(client))
    assert value["enabled"] is True
    value.update({"time": "07:15", "schedule_since": dt.datetime.now(dt.UTC).isoformat()})
    patched = client.patch(
        "/api/v2/variables/casemis_config", json={"key": "casemis_config", "value": json.dumps(value)}
    )
    assert patched.status_code == 200, patched.text
    wait_until(
        lambda: _details(client)["timetable_summary"] == "15 7 * * 1,3,5",
        60,
        "the schedule from the REST-edited Variable",
        world.stack,
    )

    # The upload size limit (set to 1 MB in the Variable): a larger file is refused, not stored.
    value["upload_max_mb"] = 1
    client.patch(
        "/api/v2/variables/casemis_config", json={"key": "casemis_config", "value": json.dumps(value)}
    )
    before = sorted(world.uploads.iterdir())
    token = _csrf(client.get("/casemis/").text)
    big = b"REPT_DATE,SELPA_CODE\n" + b"20271201,3410\n" * 110_000  # about 1.5 MB
    refused = client.post(
        "/casemis/upload",
        data={"csrf_token": token},
        files={"table_a": ("tableA.csv", big, "text/csv")},
    )
    assert refused.status_code == 413
    assert "larger than the limit of 1 MB" in refused.text
    assert sorted(world.uploads.iterdir()) == before
    # Beyond what two files may add up to: refused while streaming, before the rest is read.
    huge = client.post(
        "/casemis/upload",
        data={"csrf_token": token},
        files={"table_a": ("tableA.csv", big * 2, "text/csv")},
    )
    assert huge.status_code == 413
    assert sorted(world.uploads.iterdir()) == before
    client.close()


def test_report_folder_name_matches_the_pipeline():
    """The page finds a failed run's summary.json in the folder the pipeline wrote it to."""
    from casemis.pipeline import RunContext
    from casemis.web.backend import report_folder_name

    for run_id in (
        "manual__2026-12-04T20:42:53.813091+00:00",
        "scheduled__2027-03-15T01:30:00+00:00",
        "../x",
    ):
        assert report_folder_name(run_id) == RunContext(run_id, "", "").folder_name
