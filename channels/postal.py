"""Direct mail: a message's postal address checked, and the CSV a print house is sent, written so
Excel opens it as it is. Pure formatting, no database: the caller picks the messages and the file.

The channel itself only checks the address: a message with one is SENT (going into the export is
its delivery; the caller writes the CSV from the rows of the messages it sent), one without is
FAILED, never resent."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import astuple, dataclass
from typing import Any, TextIO

from channels.base import Delivery
from channels.ledger import FAILED, SENT, Outcome

REQUIRED = ("name", "postal_code", "city", "address")  # the keys of `Delivery.data` a letter needs
HEADER = ("message_id", "name", "postal_code", "country", "region", "city", "address", "text")
BOM = "\ufeff"  # lets Excel read the file as UTF-8 instead of the system code page
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class PostalRow:
    """One letter, in the CSV's column order."""

    message_id: str
    name: str
    postal_code: str
    country: str
    region: str
    city: str
    street: str  # the address text (street, house, flat): the CSV's `address` column
    text: str  # the personalised text printed in the letter

    @classmethod
    def from_delivery(cls, delivery: Delivery) -> PostalRow:
        """The row for a postal delivery: the address from `data`, the letter from `text`."""
        data = delivery.data
        return cls(
            message_id=str(delivery.message_id), name=_part(data, "name"), postal_code=_part(data, "postal_code"),
            country=_part(data, "country"), region=_part(data, "region"), city=_part(data, "city"),
            street=_part(data, "address"), text=delivery.text,
        )


def _part(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int):
        return ""  # a postal code given as a number is still a postal code; nothing else is
    return str(value).strip()


def check_address(data: Mapping[str, Any]) -> list[str]:
    """The required address parts `data` lacks (missing or blank), in REQUIRED order."""
    return [key for key in REQUIRED if not _part(data, key)]


def write_csv(rows: Iterable[PostalRow], out: TextIO, *, delimiter: str = ",", bom: bool = False) -> int:
    """Write the header and `rows` as CSV to `out` (open it with newline="" and, for a file,
    encoding="utf-8"); returns how many rows were written.

    For Excel: `bom=True` so it reads UTF-8 (Cyrillic) correctly, and `delimiter=";"` where the
    system list separator is `;` (Russian and most European locales). Text with line breaks stays
    in one quoted cell. A cell that would start a formula (= + - @ tab CR) gets a leading `'`, so
    a name like "=HYPERLINK(...)" is shown, not run (OWASP, CSV injection)."""
    if bom:
        out.write(BOM)
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(HEADER)
    written = 0
    for row in rows:
        writer.writerow([_cell(value) for value in astuple(row)])
        written += 1
    return written


def _cell(value: object) -> str:
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


class PostalChannel:
    """Postal deliveries: `data` carries the address (name, postal_code, country, region, city,
    address), `text` the letter."""

    name = "postal"

    async def deliver(self, delivery: Delivery) -> Outcome:
        if missing := check_address(delivery.data):
            return Outcome(FAILED, reason=f"no postal address: {', '.join(missing)}")
        return Outcome(SENT, response="added to the print export")

    async def close(self) -> None:
        return None
