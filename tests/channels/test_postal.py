"""Direct mail: the print house's CSV (what Excel and the csv module read back) and the postal
channel's refusal of messages without an address."""

from __future__ import annotations

import csv
import io
import uuid
from pathlib import Path

import pytest

from channels.base import Delivery
from channels.ledger import FAILED, SENT
from channels.postal import HEADER, PostalChannel, PostalRow, check_address, write_csv

ADDRESS = {
    "name": "Анна Петрова", "postal_code": "101000", "country": "Россия", "region": "Москва",
    "city": "Москва", "address": "ул. Мясницкая, д. 1, кв. 5",
}


def row(**changes: str) -> PostalRow:
    fields = {
        "message_id": "0190f0e2-7c1a-7000-8000-000000000001", "name": "Анна Петрова", "postal_code": "101000",
        "country": "Россия", "region": "Москва", "city": "Москва", "street": "ул. Мясницкая, д. 1, кв. 5",
        "text": "Анна, спасибо, что вы с нами!\nВаша скидка: 15 %.",
    }
    return PostalRow(**(fields | changes))


def read_back(written: str, delimiter: str = ",") -> list[list[str]]:
    return list(csv.reader(io.StringIO(written, newline=""), delimiter=delimiter))


def test_csv_round_trips_with_a_header_and_cyrillic_text_with_line_breaks() -> None:
    out = io.StringIO(newline="")
    rows = [row(), row(message_id="0190f0e2-7c1a-7000-8000-000000000002", name="Иван", text="Привет, Иван")]

    assert write_csv(rows, out) == 2

    assert read_back(out.getvalue()) == [
        list(HEADER),
        ["0190f0e2-7c1a-7000-8000-000000000001", "Анна Петрова", "101000", "Россия", "Москва", "Москва",
         "ул. Мясницкая, д. 1, кв. 5", "Анна, спасибо, что вы с нами!\nВаша скидка: 15 %."],
        ["0190f0e2-7c1a-7000-8000-000000000002", "Иван", "101000", "Россия", "Москва", "Москва",
         "ул. Мясницкая, д. 1, кв. 5", "Привет, Иван"],
    ]
    assert out.getvalue().splitlines()[0] == "message_id,name,postal_code,country,region,city,address,text"
    assert '"Анна, спасибо, что вы с нами!\nВаша скидка: 15 %."' in out.getvalue()


def test_semicolon_and_bom_for_russian_excel_survive_a_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "letters.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        write_csv([row(street="ул. Ленина; д. 2")], out, delimiter=";", bom=True)

    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfmessage_id;name;postal_code;")
    with path.open(encoding="utf-8-sig", newline="") as back:
        header, letter = list(csv.reader(back, delimiter=";"))
    assert header == list(HEADER)
    assert letter[HEADER.index("address")] == "ул. Ленина; д. 2"
    assert letter[HEADER.index("name")] == "Анна Петрова"


def test_no_bom_unless_asked() -> None:
    out = io.StringIO(newline="")

    write_csv([], out)

    assert out.getvalue() == ",".join(HEADER) + "\r\n"


@pytest.mark.parametrize(
    "dangerous",
    ["=HYPERLINK(\"http://evil.example\",\"click\")", "+7 999 000-00-00", "-2+3", "@SUM(A1:A2)", "\tnote", "\rnote"],
)
def test_cells_that_would_start_a_formula_are_shown_as_text(dangerous: str) -> None:
    out = io.StringIO(newline="")

    write_csv([row(name=dangerous, city=dangerous, text=dangerous)], out)

    [_, letter] = read_back(out.getvalue())
    assert letter[HEADER.index("name")] == "'" + dangerous
    assert letter[HEADER.index("city")] == "'" + dangerous
    assert letter[HEADER.index("text")] == "'" + dangerous
    assert letter[HEADER.index("postal_code")] == "101000"


def test_formula_characters_inside_a_cell_are_left_alone() -> None:
    out = io.StringIO(newline="")

    write_csv([row(text="Итого = 100 ₽, скидка -15 %, пишите на a@b.ru")], out)

    assert read_back(out.getvalue())[1][-1] == "Итого = 100 ₽, скидка -15 %, пишите на a@b.ru"


def test_check_address_names_missing_and_blank_parts() -> None:
    assert check_address(ADDRESS) == []
    assert check_address(ADDRESS | {"postal_code": 101000}) == []  # a number is still a postal code
    assert check_address({}) == ["name", "postal_code", "city", "address"]
    assert check_address(ADDRESS | {"city": "  ", "address": None}) == ["city", "address"]
    assert check_address({k: v for k, v in ADDRESS.items() if k != "name"}) == ["name"]
    assert check_address(ADDRESS | {"country": "", "region": ""}) == []  # optional


async def test_postal_delivery_without_an_address_fails_naming_what_is_missing() -> None:
    postal = PostalChannel()
    message = Delivery(uuid.uuid4(), "lead", text="Письмо", data={"name": "Анна", "city": "Москва"})

    outcome = await postal.deliver(message)

    assert outcome.state == FAILED
    assert outcome.reason == "no postal address: postal_code, address"


async def test_postal_delivery_with_an_address_is_sent_and_becomes_a_row() -> None:
    postal = PostalChannel()
    message = Delivery(uuid.uuid4(), "lead", text="=1+1 Письмо", data=ADDRESS | {"postal_code": " 101000 "})

    outcome = await postal.deliver(message)
    out = io.StringIO(newline="")
    write_csv([PostalRow.from_delivery(message)], out)

    assert outcome.state == SENT
    assert read_back(out.getvalue())[1] == [
        str(message.message_id), "Анна Петрова", "101000", "Россия", "Москва", "Москва",
        "ул. Мясницкая, д. 1, кв. 5", "'=1+1 Письмо",
    ]
    assert postal.name == "postal"
