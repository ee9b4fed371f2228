"""CSV import as marketers use it: Russian Excel files, the CLI, and the /v1/imports API."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from core.db import Database
from core.outbox import OutboxEvent
from core.settings import Settings
from leads.api.imports import running_imports
from leads.intake.import_rows import ImportOptions
from leads.intake.importer import import_file
from leads.intake.interaction import Origin
from leads.models import Activity, CustomField, ImportRun, Lead, Touchpoint
from leads.privacy import erase_lead
from leads.schemas import clean_profile
from leads.service import record_intake
from tests.conftest import make_key

ROOT = Path(__file__).resolve().parents[2]
SECRETS = ["test-key-new", "test-key-old"]

RUSSIAN_EXCEL = (
    "ФИО;Электронная почта;Телефон;Организация;Должность;Город;День рождения\r\n"
    "Иванов Иван Иванович;Ivan.Ivanov@Example.ru;8 (912) 345-67-89;ООО «Ромашка»;Директор;Москва;31.12.1980\r\n"
    "Петрова Мария;maria@example.ru;;АО Вектор;Маркетолог;Санкт-Петербург;\r\n"
)


async def run_file(db: Database, path: Path, content: bytes, **options: Any) -> ImportRun:
    await asyncio.to_thread(path.write_bytes, content)
    return await import_file(db, path, ImportOptions(**options), SECRETS, default_region="RU")


async def count(db: Database, model: Any, *where: Any) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def leads_by_email(db: Database) -> dict[str | None, Lead]:
    async with db.sessions() as session:
        return {lead.email: lead for lead in await session.scalars(select(Lead))}


async def event_names(db: Database) -> list[str]:
    async with db.sessions() as session:
        return list(await session.scalars(select(OutboxEvent.name).order_by(OutboxEvent.id)))


@pytest.mark.parametrize(
    "encoded",
    [
        RUSSIAN_EXCEL.encode("cp1251"),
        b"\xef\xbb\xbf" + RUSSIAN_EXCEL.encode("utf-8"),
        RUSSIAN_EXCEL.encode("utf-8"),
        ("sep=;\r\n" + RUSSIAN_EXCEL).encode("cp1251"),
    ],
    ids=["cp1251", "utf8-bom", "utf8", "excel-sep-line"],
)
async def test_russian_excel_csv_imports_cyrillic_names(db: Database, tmp_path: Path, encoded: bytes) -> None:
    run = await run_file(db, tmp_path / "Выставка.csv", encoded)

    assert (run.status, run.created, run.failed) == ("done", 2, 0), run.errors
    leads = await leads_by_email(db)
    ivan = leads["ivan.ivanov@example.ru"]
    assert (ivan.first_name, ivan.last_name, ivan.phone) == ("Иван", "Иванов", "+79123456789")
    assert (ivan.company, ivan.job_title, ivan.city) == ("ООО «Ромашка»", "Директор", "Москва")
    assert ivan.birthday is not None and ivan.birthday.isoformat() == "1980-12-31"
    assert (leads["maria@example.ru"].first_name, leads["maria@example.ru"].last_name) == ("Мария", "Петрова")
    assert run.details["delimiter"] == ";"


async def test_english_headers_with_commas_and_utm_columns_make_touchpoints(db: Database, tmp_path: Path) -> None:
    content = (
        b"First Name,Last Name,E-mail,Mobile,Tags,utm_source,utm_campaign\n"
        b'John,Smith,john@example.com,+44 20 7946 0958,"vip, expo",linkedin,spring\n'
        b"Mary,Jones,mary@example.com,,,,\n"
    )
    run = await run_file(db, tmp_path / "list.csv", content, campaign="fallback", tags=["import-2026"])

    assert (run.created, run.failed) == (2, 0), run.errors
    async with db.sessions() as session:
        john = await session.scalar(select(Lead).where(Lead.email == "john@example.com"))
        assert john is not None and sorted(t.tag for t in john.tags) == ["expo", "import-2026", "vip"]
        assert john.phone == "+442079460958"
        points = {
            t.lead_id: (t.channel, t.source, t.campaign) for t in await session.scalars(select(Touchpoint))
        }
    assert points[john.id] == ("import", "linkedin", "spring")
    assert sorted(points.values()) == [("import", "linkedin", "spring"), ("import", "list.csv", "fallback")]


async def test_mapping_overrides_route_columns_to_fields_custom_fields_and_nowhere(
    db: Database, tmp_path: Path
) -> None:
    async with db.sessions() as session:
        session.add(CustomField(key="budget", label="Бюджет", type="integer"))
        await session.commit()
    content = "Контакт;Адрес;Бюджет;Секрет\nanna@example.com;Казань;150000;пароль\n".encode("cp1251")
    run = await run_file(
        db, tmp_path / "m.csv", content,
        mapping={"Контакт": "email", "адрес": "city", "Бюджет": "custom.budget", "Секрет": "-"},
    )

    assert (run.created, run.failed) == (1, 0), run.errors
    anna = (await leads_by_email(db))["anna@example.com"]
    assert (anna.city, anna.custom) == ("Казань", {"budget": 150000})
    assert run.details["unknown_columns"] == []
    assert run.mapping == {"Контакт": "email", "Адрес": "city", "Бюджет": "custom.budget", "Секрет": "-"}


async def test_mapping_to_an_undefined_custom_field_refuses_the_file_naming_the_mapping(
    db: Database, tmp_path: Path
) -> None:
    from core.errors import Invalid

    with pytest.raises(Invalid) as refused:
        await run_file(db, tmp_path / "m.csv", b"email,x\na@example.com,1\n", mapping={"x": "custom.nope"})
    assert refused.value.field == "mapping"
    assert await count(db, ImportRun) == 0


async def test_dry_run_reports_what_would_happen_and_writes_no_lead(db: Database, tmp_path: Path) -> None:
    content = (
        "email;Имя;Любимый цвет\n"
        "a@example.com;Анна;синий\n"
        "broken;Борис;\n"
        "a@example.com;Анна;\n"
        "c@example.com;;\n"
    ).encode()
    run = await run_file(db, tmp_path / "d.csv", content, dry_run=True)

    assert run.dry_run and run.status == "done"
    assert (run.total_rows, run.created, run.failed) == (4, 2, 1)
    assert run.errors[0]["line"] == 3 and run.errors[0]["field"] == "email"
    assert run.details["unknown_columns"] == ["Любимый цвет"]
    assert await count(db, Lead) == 0
    assert await count(db, OutboxEvent) == 0
    assert await count(db, ImportRun) == 1


async def test_broken_rows_are_reported_by_line_while_good_rows_import(db: Database, tmp_path: Path) -> None:
    content = (
        "email,phone,company,first name\n"                       # line 1
        'good1@example.com,,"ООО ""Альфа""\nфилиал №2\nСклад",Анна\n'  # lines 2-4: a quoted multi-line value
        "not-an-email,,Бета,Борис\n"                             # line 5
        ",,Гамма,Галина\n"                                       # line 6: neither email nor phone
        "good2@example.com,12345,Дельта,Денис\n"                 # line 7: a phone that is no phone
        "good3@example.com,+7 912 000-00-01,Эпсилон,Елена\n"     # line 8
    ).encode()
    run = await run_file(db, tmp_path / "b.csv", content)

    assert (run.total_rows, run.created, run.failed) == (5, 2, 3)
    assert [(e["line"], e["field"]) for e in run.errors] == [(5, "email"), (6, "email"), (7, "phone")]
    assert "phone" in run.errors[1]["message"]
    leads = await leads_by_email(db)
    assert set(leads) == {"good1@example.com", "good3@example.com"}
    assert leads["good1@example.com"].company == 'ООО "Альфа" филиал №2 Склад'


async def test_same_email_twice_in_a_file_makes_one_lead_that_the_later_row_fills(
    db: Database, tmp_path: Path
) -> None:
    content = (
        "email,first_name,company,city\n"
        "olga@example.com,Ольга,,\n"
        "other@example.com,Пётр,,\n"
        "OLGA@example.com,Ольга,ООО Ромашка,Тверь\n"
    ).encode()
    run = await run_file(db, tmp_path / "dup.csv", content)

    assert (run.created, run.updated, run.failed) == (2, 1, 0)
    olga = (await leads_by_email(db))["olga@example.com"]
    assert (olga.company, olga.city) == ("ООО Ромашка", "Тверь")
    assert (await event_names(db)).count("lead.created") == 2


async def test_existing_leads_are_matched_by_email_then_phone_and_filled_not_overwritten(
    db: Database, tmp_path: Path
) -> None:
    async with db.sessions() as session:
        await record_intake(
            session, clean_profile({"email": "form@example.com", "company": "Typed in the form"}, "RU"),
            Origin(channel="form"), "form_submitted",
        )
        await record_intake(
            session, clean_profile({"phone": "+79120000002", "first_name": "Звонок"}, "RU"),
            Origin(channel="call"), "call_answered",
        )
        await session.commit()
    content = (
        "email,phone,company,city\n"
        "form@example.com,,From the old CRM,Москва\n"
        "caller@example.com,89120000002,Новая,\n"
    ).encode()
    run = await run_file(db, tmp_path / "crm.csv", content)

    assert (run.created, run.updated) == (0, 2)
    leads = await leads_by_email(db)
    assert (leads["form@example.com"].company, leads["form@example.com"].city) == ("Typed in the form", "Москва")
    caller = leads["caller@example.com"]  # the phone-only lead got the file's email
    assert (caller.first_name, caller.company, caller.source_channel) == ("Звонок", "Новая", "call")
    assert await count(db, Lead) == 2

    rerun = await run_file(db, tmp_path / "crm-2.csv", content, overwrite=True)
    assert rerun.updated == 2
    assert (await leads_by_email(db))["form@example.com"].company == "From the old CRM"


async def test_running_the_same_file_again_changes_nothing(db: Database, tmp_path: Path) -> None:
    content = (RUSSIAN_EXCEL + "Сидоров Пётр;petr@example.ru;;;;;\r\n").encode("cp1251")
    first = await run_file(db, tmp_path / "same.csv", content, tags=["выставка"])
    before = (await count(db, Lead), await count(db, Touchpoint), await count(db, Activity), await event_names(db))

    second = await run_file(db, tmp_path / "same.csv", content, tags=["выставка"])

    assert (first.created, second.created, second.updated, second.skipped) == (3, 0, 0, 3)
    after = (await count(db, Lead), await count(db, Touchpoint), await count(db, Activity), await event_names(db))
    assert after == before


async def test_an_imported_row_writes_what_record_intake_writes(db: Database, tmp_path: Path) -> None:
    async with db.sessions() as session:
        await record_intake(
            session, clean_profile({"email": "api@example.com"}, "RU"),
            Origin(channel="import", source="x.csv", campaign="c"), "imported",
        )
        await session.commit()
    run = await run_file(db, tmp_path / "x.csv", b"email\nfile@example.com\n", campaign="c")

    async with db.sessions() as session:
        events = list(await session.scalars(select(OutboxEvent).order_by(OutboxEvent.id)))
        activities = list(await session.scalars(select(Activity).order_by(Activity.id)))
        points = list(await session.scalars(select(Touchpoint).order_by(Touchpoint.id)))
        leads = list(await session.scalars(select(Lead).order_by(Lead.id)))
    assert [e.name for e in events] == ["lead.created", "lead.activity"] * 2
    for by_hand, imported in ((events[0], events[2]), (events[1], events[3])):
        assert set(by_hand.payload) == set(imported.payload)
    assert events[2].payload["lead_id"] == str(leads[1].id) and events[2].payload["campaign"] == "c"
    assert events[3].payload["activity_id"] == str(activities[1].id)
    assert (activities[1].type, activities[1].touchpoint_id) == ("imported", points[1].id)
    assert activities[1].data == {"import_id": str(run.id), "file": "x.csv", "line": 2}
    assert [(p.channel, p.source, p.campaign) for p in points] == [("import", "x.csv", "c")] * 2
    assert [lead.source_channel for lead in leads] == ["import", "import"]
    assert leads[1].created_at == leads[1].updated_at


async def test_an_erased_person_is_not_brought_back_by_an_import(
    db: Database, tmp_path: Path, settings: Settings
) -> None:
    async with db.sessions() as session:
        result = await record_intake(
            session, clean_profile({"email": "gone@example.com"}, "RU"), Origin(channel="form"), "form_submitted"
        )
        await erase_lead(session, result.lead, settings)
        await session.commit()
    run = await run_file(db, tmp_path / "old.csv", b"email\ngone@example.com\nnew@example.com\n")

    assert (run.created, run.failed) == (1, 1)
    assert run.errors[0]["line"] == 2 and "erased" in run.errors[0]["message"]
    assert "gone@example.com" not in await leads_by_email(db)


@pytest.mark.parametrize("overwrite", [False, True])
async def test_a_row_with_a_merged_away_email_or_phone_updates_the_survivor(
    db: Database, tmp_path: Path, overwrite: bool
) -> None:
    from leads.merge import merge_leads

    async with db.sessions() as session:
        survivor = await record_intake(
            session, clean_profile({"email": "a@example.com", "phone": "+79120000001"}, "RU"),
            Origin(channel="form"), "form_submitted",
        )
        other = await record_intake(
            session, clean_profile({"email": "m.b@example.com", "phone": "+79120000002"}, "RU"),
            Origin(channel="call"), "call_answered",
        )
        await merge_leads(session, survivor.lead.id, other.lead.id)
        await session.commit()
    content = "email,phone,company,city\nM.B@example.com,,ООО Ромашка,\n,89120000002,,Тверь\n".encode()
    run = await run_file(db, tmp_path / "crm.csv", content, overwrite=overwrite)

    assert (run.created, run.updated, run.failed) == (0, 2, 0), run.errors
    leads = await leads_by_email(db)
    kept = leads["a@example.com"]
    assert (kept.id, kept.phone, kept.company, kept.city) == (survivor.lead.id, "+79120000001", "ООО Ромашка", "Тверь")
    assert await count(db, Lead) == 2  # the survivor and the merged row that points at it


async def test_form_posts_while_importing_end_with_one_lead_per_email(
    db: Database, tmp_path: Path
) -> None:
    emails = [f"race{i}@example.com" for i in range(300)]
    path = tmp_path / "race.csv"
    path.write_text("email\n" + "\n".join(emails) + "\n")

    async def form_post(email: str) -> None:
        async with db.sessions() as session:
            profile = clean_profile({"email": email}, "RU")
            await record_intake(session, profile, Origin(channel="form"), "form_submitted")
            await session.commit()

    importing = asyncio.create_task(import_file(db, path, ImportOptions(), SECRETS))
    await asyncio.gather(*(form_post(e) for e in emails[::15]))
    run = await importing

    assert run.failed == 0 and run.created + run.updated == 300
    assert await count(db, Lead) == 300
    assert (await event_names(db)).count("lead.created") == 300


# -- the CLI, as a process -------------------------------------------------------------------


def nurture(database_url: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NURTURE_DATABASE_URL": database_url, "NURTURE_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "import-leads", *args], capture_output=True, text=True,
        env=env, cwd=ROOT, timeout=120,
    )


async def test_cli_exit_codes_say_whether_every_row_imported(
    database_url: str, data_dir: Path, db: Database, tmp_path: Path
) -> None:
    clean = tmp_path / "clean.csv"
    clean.write_bytes(RUSSIAN_EXCEL.encode("cp1251"))
    broken = tmp_path / "broken.csv"
    broken.write_text("email;Имя\nok@example.com;Ок\nплохой;Плохой\n", encoding="utf-8")
    errors = tmp_path / "errors.csv"

    done = nurture(database_url, data_dir, str(clean), "--tag", "выставка")
    assert done.returncode == 0, done.stderr
    assert "2 created" in done.stdout and "0 failed" in done.stdout

    done = nurture(database_url, data_dir, str(broken), "--errors-csv", str(errors))
    assert done.returncode == 1, done.stderr
    assert "line 3 email" in done.stderr and "1 created" in done.stdout
    assert errors.read_text(encoding="utf-8-sig").splitlines()[1].startswith("3;email;email;")
    assert await count(db, Lead) == 3


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "no such file"),
        (b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)), "Excel"),
        (b"\x00\x01\x02binary\xff\xfe" * 50, "not CSV"),
        ("Имя;Город\nАнна;Казань\n".encode("cp1251"), "no email or phone column"),
    ],
    ids=["missing", "xlsx", "binary", "no-identity-column"],
)
async def test_cli_refuses_an_unusable_file_with_exit_2_and_a_readable_message(
    database_url: str, data_dir: Path, db: Database, tmp_path: Path, content: bytes | None, words: str
) -> None:
    path = tmp_path / "file.csv"
    if content is not None:
        path.write_bytes(content)
    done = nurture(database_url, data_dir, str(path))
    assert done.returncode == 2
    assert words in done.stderr and "Traceback" not in done.stderr
    assert await count(db, ImportRun) == 0


async def test_cli_dry_run_shows_the_column_mapping_and_writes_no_lead(
    database_url: str, data_dir: Path, db: Database, tmp_path: Path
) -> None:
    path = tmp_path / "dry.csv"
    path.write_bytes("Почта;Примечание\nx@example.com;позвонить\n".encode("cp1251"))
    done = nurture(database_url, data_dir, str(path), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "Почта → email" in done.stdout and "Примечание" in done.stderr
    assert await count(db, Lead) == 0


# -- the API ---------------------------------------------------------------------------------


async def import_headers(db: Database) -> dict[str, str]:
    return {"authorization": f"Bearer {await make_key(db, 'import')}"}


async def test_small_upload_imports_before_the_answer(client: httpx.AsyncClient, db: Database) -> None:
    headers = await import_headers(db)
    resp = await client.post(
        "/v1/imports", headers=headers,
        files={"file": ("Выставка.csv", RUSSIAN_EXCEL.encode("cp1251"), "text/csv")},
        data={"tags": "выставка,2026", "campaign": "expo"},
    )
    assert resp.status_code == 201, resp.text
    report = resp.json()
    assert (report["status"], report["created"], report["failed"], report["encoding"]) == ("done", 2, 0, "cp1251")
    assert resp.headers["location"] == f"/v1/imports/{report['id']}"
    async with db.sessions() as session:
        ivan = await session.scalar(select(Lead).where(Lead.email == "ivan.ivanov@example.ru"))
        assert ivan is not None and sorted(t.tag for t in ivan.tags) == ["2026", "выставка"]


async def test_large_upload_runs_in_the_background_and_is_polled_to_completion(
    client: httpx.AsyncClient, app: FastAPI, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("leads.api.imports.INLINE_LINES", 0)
    headers = await import_headers(db)
    rows = "".join(f"lead{i}@example.com;+7912{i:07d}\n" for i in range(300))
    resp = await client.post(
        "/v1/imports", headers=headers,
        files={"file": ("big.csv", f"email;phone\n{rows}not-an-email;\n".encode(), "text/csv")},
        data={"mapping": '{"phone": "phone"}'},
    )
    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "queued"
    url = resp.headers["location"]

    seen = {(await client.get(url, headers=headers)).json()["status"]}
    await asyncio.gather(*running_imports(app))
    report = (await client.get(url, headers=headers)).json()

    assert seen <= {"queued", "running", "done"}
    assert (report["status"], report["total_rows"], report["created"], report["failed"]) == ("done", 301, 300, 1)
    assert report["errors"] == [
        {"line": 302, "field": "email", "column": "email", "message": report["errors"][0]["message"]}
    ]
    listed = (await client.get("/v1/imports", headers=headers)).json()["items"]
    assert [item["id"] for item in listed] == [report["id"]]


async def test_upload_errors_name_the_problem(client: httpx.AsyncClient, app: FastAPI, db: Database) -> None:
    headers = await import_headers(db)
    csv_file = {"file": ("a.csv", b"email\na@example.com\n", "text/csv")}

    not_multipart = await client.post("/v1/imports", headers=headers, content=b"email\n")
    no_file = await client.post("/v1/imports", headers=headers, data={"source": "x"}, files={"x": ("x", b"")})
    binary = await client.post("/v1/imports", headers=headers, files={"file": ("a.xlsx", b"PK\x03\x04" + bytes(300))})
    no_email = await client.post("/v1/imports", headers=headers, files={"file": ("a.csv", b"a,b\n1,2\n")})
    bad_mapping = await client.post("/v1/imports", headers=headers, files=csv_file, data={"mapping": "{nope"})
    bad_flag = await client.post("/v1/imports", headers=headers, files=csv_file, data={"dry_run": "maybe"})
    app.state.settings.max_import_bytes = 10
    too_big = await client.post("/v1/imports", headers=headers, files=csv_file)

    assert (not_multipart.status_code, not_multipart.json()["error"]["field"]) == (415, "file")
    assert (no_file.status_code, no_file.json()["error"]["field"]) == (422, "file")
    assert (binary.status_code, binary.json()["error"]["field"]) == (415, "file")
    assert (no_email.status_code, no_email.json()["error"]["field"]) == (422, "file")
    assert (bad_mapping.status_code, bad_mapping.json()["error"]["field"]) == (422, "mapping")
    assert (bad_flag.status_code, bad_flag.json()["error"]["field"]) == (422, "dry_run")
    assert (too_big.status_code, too_big.json()["error"]["field"]) == (413, "file")
    assert await count(db, ImportRun) == 0 and await count(db, Lead) == 0


async def test_upload_with_a_nul_in_a_tag_gets_422_naming_tags_and_imports_nothing(
    client: httpx.AsyncClient, db: Database
) -> None:
    csv_file = {"file": ("a.csv", b"email\na@example.com\n", "text/csv")}
    resp = await client.post("/v1/imports", headers=await import_headers(db), files=csv_file, data={"tags": "vip\x00"})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == "tags.0"
    assert await count(db, ImportRun) == 0 and await count(db, Lead) == 0


async def test_upload_whose_file_name_holds_a_nul_imports_under_the_name_without_it(
    client: httpx.AsyncClient, db: Database
) -> None:
    body = (
        b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="\xd0\xbb\xd0\xb8\x00\xd0\xb4.csv"\r\n'
        b"Content-Type: text/csv\r\n\r\nemail\na@example.com\n\r\n--b0undary--\r\n"
    )
    headers = {**await import_headers(db), "content-type": "multipart/form-data; boundary=b0undary"}
    resp = await client.post("/v1/imports", headers=headers, content=body)
    assert resp.status_code == 201, resp.text
    assert (resp.json()["filename"], resp.json()["created"]) == ("лид.csv", 1)


async def test_imports_need_the_import_scope(client: httpx.AsyncClient, db: Database) -> None:
    reader = {"authorization": f"Bearer {await make_key(db, 'leads:read')}"}
    resp = await client.post("/v1/imports", headers=reader, files={"file": ("a.csv", b"email\na@example.com\n")})
    assert resp.status_code == 403
    assert (await client.get("/v1/imports/nope", headers=await import_headers(db))).status_code == 404


@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=2000), as_file=st.booleans())
async def test_arbitrary_bytes_posted_to_imports_never_give_a_server_error(
    client: httpx.AsyncClient, db: Database, settings: Settings, body: bytes, as_file: bool
) -> None:
    headers = await import_headers(db)
    if as_file:
        resp = await client.post("/v1/imports", headers=headers, files={"file": ("f.csv", body)})
    else:
        headers["content-type"] = "multipart/form-data; boundary=xyz"
        resp = await client.post("/v1/imports", headers=headers, content=body)
    assert resp.status_code < 500, resp.text
    await asyncio.gather(*running_imports(client._transport.app))  # type: ignore[attr-defined]
