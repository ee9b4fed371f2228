"""What a CSV file of leads says: its encoding and delimiter, which column is which lead field,
and its rows with the physical line each starts on. Reads as a stream; no database here.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from core.errors import Invalid, UnsupportedMediaType
from leads.schemas import PROFILE_FIELDS

SAMPLE_BYTES = 256 * 1024
DELIMITERS = (",", ";", "\t")
UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
# Columns that are not a profile field by themselves but still have a meaning.
EXTRA_TARGETS = ("full_name", "tags", *UTM_FIELDS)
IGNORE = "-"

# Header names as Excel users write them, after `header_key` (lower case, ё→е, no dots,
# separators as single spaces). Several columns may map to one field: the first filled one wins.
ALIASES: dict[str, tuple[str, ...]] = {
    "email": (
        "email", "e mail", "mail", "email address", "e mail address", "почта", "электронная почта",
        "эл почта", "адрес электронной почты", "емейл", "имейл", "e mail адрес",
    ),
    "phone": (
        "phone", "phone number", "mobile", "mobile phone", "телефон", "номер телефона", "тел",
        "мобильный", "мобильный телефон", "моб телефон", "сотовый", "контактный телефон",
    ),
    "first_name": ("first name", "firstname", "given name", "имя"),
    "last_name": ("last name", "lastname", "surname", "family name", "фамилия"),
    "full_name": (
        "фио", "full name", "fullname", "name", "contact name", "имя и фамилия", "фамилия имя",
        "фамилия имя отчество", "контактное лицо",
    ),
    "company": (
        "company", "company name", "organization", "organisation", "компания", "организация",
        "название компании", "наименование организации",
    ),
    "job_title": ("job title", "title", "position", "должность"),
    "city": ("city", "town", "город"),
    "country": ("country", "страна"),
    "region": ("region", "state", "province", "регион", "область"),
    "industry": ("industry", "отрасль", "сфера деятельности", "сфера"),
    "company_size": ("company size", "employees", "размер компании", "количество сотрудников"),
    "birthday": ("birthday", "date of birth", "birth date", "dob", "день рождения", "дата рождения"),
    "timezone": ("timezone", "time zone", "часовой пояс"),
    "customer_status": ("customer status", "статус клиента"),
    "tags": ("tags", "tag", "теги", "тэги", "тег", "метки"),
    **{utm: (utm.replace("_", " "),) for utm in UTM_FIELDS},
}
_BY_HEADER = {alias: target for target, names in ALIASES.items() for alias in names}

COUNTRIES = {
    "россия": "RU", "российская федерация": "RU", "рф": "RU", "russia": "RU",
    "russian federation": "RU", "беларусь": "BY", "белоруссия": "BY", "belarus": "BY",
    "казахстан": "KZ", "kazakhstan": "KZ", "украина": "UA", "ukraine": "UA",
    "узбекистан": "UZ", "uzbekistan": "UZ", "армения": "AM", "armenia": "AM", "грузия": "GE",
    "georgia": "GE", "азербайджан": "AZ", "azerbaijan": "AZ", "кыргызстан": "KG", "киргизия": "KG",
    "kyrgyzstan": "KG", "таджикистан": "TJ", "tajikistan": "TJ", "германия": "DE",
    "germany": "DE", "сша": "US", "usa": "US", "united states": "US", "турция": "TR",
    "turkey": "TR", "китай": "CN", "china": "CN", "сербия": "RS", "serbia": "RS", "оаэ": "AE",
    "uae": "AE",
}
# Patronymics (Иванович, Петровна, Ахмед оглы) mark the Russian "Фамилия Имя Отчество" order.
_PATRONYMIC = re.compile(r"(ович|евич|ич|овна|евна|ична|инична|оглы|кызы)$", re.IGNORECASE)
_SEP_LINE = re.compile(r"\ufeff?sep=.?")
_RU_DATE = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})$")


def header_key(name: str) -> str:
    """A header as compared with the aliases: 'E-mail' → 'e mail', 'Ф.И.О.' → 'фио'."""
    text = name.replace("\ufeff", "").lower().replace("ё", "е")
    text = re.sub(r"[.*]", "", text)
    return re.sub(r"[\s_\-/:]+", " ", text).strip()


@dataclass
class Column:
    index: int
    name: str
    target: str  # a profile field, full_name, tags, utm_*, custom.<key>, or "-" (ignored)


@dataclass
class FileLayout:
    """How to read one file: decided once from its first bytes and its header."""

    encoding: str
    delimiter: str
    header: list[str]
    columns: list[Column]
    unknown: list[str] = field(default_factory=list)

    def mapping(self) -> dict[str, str]:
        return {c.name: c.target for c in self.columns}

    def targets(self) -> set[str]:
        return {c.target for c in self.columns}


def parse_mapping(items: list[str]) -> dict[str, str]:
    """`--map` values as `column=field` (the column may itself contain '=')."""
    mapping: dict[str, str] = {}
    for item in items:
        column, sep, target = item.rpartition("=")
        if not sep or not column.strip() or not target.strip():
            raise Invalid(f"expected column=field, got {item!r}", field="mapping")
        mapping[column.strip()] = target.strip()
    return mapping


def inspect_file(
    path: Path, overrides: dict[str, str], custom_keys: set[str], encoding: str | None = None
) -> FileLayout:
    """Decide encoding, delimiter and column targets; raise if the file cannot be imported."""
    if not path.is_file():
        raise Invalid(f"no such file: {path}", field="file")
    if path.stat().st_size == 0:
        raise Invalid("the file is empty", field="file")
    encoding = encoding or detect_encoding(path)
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise Invalid(f"unknown encoding {encoding!r}", field="encoding") from None
    with path.open("rb") as raw:
        sample = raw.read(SAMPLE_BYTES).decode(encoding, errors="replace")
    sample = sample.lstrip("\ufeff")
    _refuse_binary(sample)
    delimiter, header = _sniff(sample)
    if not any(cell.strip() for cell in header):
        raise Invalid("the file has no header row", field="file")
    columns, unknown = _map_columns(header, overrides, custom_keys)
    layout = FileLayout(encoding, delimiter, header, columns, unknown)
    if not layout.targets() & {"email", "phone"}:
        shown = ", ".join(repr(h) for h in header[:20])
        raise Invalid(
            f"no email or phone column among {shown}; name one with --map column=email",
            field="file",
        )
    return layout


def detect_encoding(path: Path) -> str:
    """UTF-8 (with or without BOM), UTF-16 with BOM, else the legacy code page it looks like.

    A whole-file UTF-8 check is cheap (hundreds of MB/s) and avoids guessing wrong on a file
    whose first Cyrillic letters come late; legacy files go to charset-normalizer, limited to the
    code pages Russian and Western Excel write, with Windows-1251 as the fallback.
    """
    with path.open("rb") as raw:
        head = raw.read(8)
        if head.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):
            raise UnsupportedMediaType(
                "this is an Excel workbook, not CSV: in Excel use File → Save As → CSV (UTF-8)",
                field="file",
            )
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16"
        raw.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            while chunk := raw.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
            return "utf-8"
        except UnicodeDecodeError:
            pass
        raw.seek(0)
        sample = raw.read(SAMPLE_BYTES)
    if b"\x00" in sample:
        raise UnsupportedMediaType("the file is not CSV text (it has binary bytes)", field="file")
    from charset_normalizer import from_bytes

    best = from_bytes(sample, cp_isolation=["cp1251", "cp1252", "koi8_r"]).best()
    return best.encoding if best is not None else "cp1251"


def _refuse_binary(sample: str) -> None:
    control = sum(1 for ch in sample if (ch < " " and ch not in "\t\r\n") or ch == "\ufffd")
    if "\x00" in sample or control > max(2, len(sample) // 100):
        raise UnsupportedMediaType("the file is not CSV text (it has binary bytes)", field="file")


def _sniff(sample: str) -> tuple[str, list[str]]:
    """The delimiter whose split of the first rows is widest and most regular, and the header.

    Excel's own `sep=;` first line wins when present.
    """
    first = sample.split("\n", 1)[0].strip("\r")
    if re.fullmatch(r"sep=.", first):
        return first[4], _first_row(sample.split("\n", 1)[1] if "\n" in sample else "", first[4])
    if "\n" in sample:
        sample = sample[: sample.rfind("\n") + 1]  # drop a line cut by the sample's end
    best: tuple[float, int, str] = (-1.0, 0, ",")
    for delimiter in DELIMITERS:
        rows = _rows(sample, delimiter, limit=50)
        if not rows:
            continue
        width = len(rows[0])
        if width < 2:
            continue
        regular = sum(1 for r in rows if len(r) == width) / len(rows)
        best = max(best, (regular, width, delimiter))
    delimiter = best[2]
    return delimiter, _first_row(sample, delimiter)


def _rows(text: str, delimiter: str, limit: int) -> list[list[str]]:
    rows: list[list[str]] = []
    try:
        for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
            if any(cell.strip() for cell in row):
                rows.append(row)
            if len(rows) >= limit:
                break
    except csv.Error:
        pass
    return rows


def _first_row(text: str, delimiter: str) -> list[str]:
    rows = _rows(text, delimiter, limit=1)
    return [cell.strip() for cell in rows[0]] if rows else []


def _map_columns(
    header: list[str], overrides: dict[str, str], custom_keys: set[str]
) -> tuple[list[Column], list[str]]:
    by_key = {header_key(k): v for k, v in overrides.items()}
    matched: set[str] = set()
    columns: list[Column] = []
    unknown: list[str] = []
    for index, name in enumerate(header):
        shown = name or f"(column {index + 1})"
        target = overrides.get(name)
        if target is not None:
            matched.add(name)
        else:
            target = by_key.get(header_key(name))
            if target is not None:
                matched.update(k for k in overrides if header_key(k) == header_key(name))
        if target is not None:
            columns.append(Column(index, shown, _check_target(name, target, custom_keys)))
            continue
        auto = _BY_HEADER.get(header_key(name))
        if auto is None:
            unknown.append(shown)
        else:
            columns.append(Column(index, shown, auto))
    missing = [k for k in overrides if k not in matched]
    if missing:
        raise Invalid(
            f"--map names columns the file does not have: {', '.join(map(repr, missing))}",
            field="mapping",
        )
    return columns, unknown


def _check_target(column: str, target: str, custom_keys: set[str]) -> str:
    if target == IGNORE:
        return target
    if target.startswith("custom."):
        key = target.removeprefix("custom.")
        if key not in custom_keys:
            raise Invalid(f"no custom field '{key}' is defined (column {column!r})", field="mapping")
        return target
    lowered = target.lower()
    if lowered in PROFILE_FIELDS or lowered in EXTRA_TARGETS:
        return lowered
    known = ", ".join((*PROFILE_FIELDS, *EXTRA_TARGETS, "custom.<key>", "-"))
    raise Invalid(f"column {column!r}: unknown field {target!r}; use one of {known}", field="mapping")


class _CountingReader(io.RawIOBase):
    """Counts the bytes the text layer has pulled, for a progress bar over the file."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        self.count += len(data)
        return len(data)

    def close(self) -> None:
        self.raw.close()
        super().close()


class RowReader:
    """Data rows after the header as (line the row starts on, cells). Use as a context manager."""

    def __init__(self, path: Path, layout: FileLayout) -> None:
        self.layout = layout
        self.size = path.stat().st_size
        self._counter = _CountingReader(path.open("rb"))
        self._text = io.TextIOWrapper(
            io.BufferedReader(self._counter, 1 << 16), encoding=layout.encoding,
            errors="replace", newline="",
        )

    @property
    def bytes_read(self) -> int:
        return self._counter.count

    def __enter__(self) -> RowReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._text.close()

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        """Rows as they come; a csv.Error (a runaway quote) surfaces as UnreadableRow."""
        reader = csv.reader(self._text, delimiter=self.layout.delimiter)
        seen_header = False
        start = 1
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise UnreadableRow(start, str(exc)) from None
            if not seen_header:
                if row and _SEP_LINE.fullmatch(row[0]) and not any(c.strip() for c in row[1:]):
                    continue
                if any(cell.strip() for cell in row):
                    seen_header = True
                continue
            yield start, row


class UnreadableRow(Exception):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


def row_values(layout: FileLayout, cells: list[str]) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Raw values of one row: (fields by target, custom values by key, tag cells), unvalidated.

    Excel's Russian habits are translated here so the shared validation sees what it expects:
    dates as ДД.ММ.ГГГГ become ISO, country names become ISO codes, ФИО is split.
    """
    values: dict[str, str] = {}
    custom: dict[str, str] = {}
    tags: list[str] = []
    for column in layout.columns:
        if column.index >= len(cells) or column.target == IGNORE:
            continue
        value = cells[column.index].strip()
        if not value:
            continue
        if column.target == "tags":
            tags.append(value)
        elif column.target.startswith("custom."):
            custom.setdefault(column.target.removeprefix("custom."), value)
        else:
            values.setdefault(column.target, value)
    full = values.pop("full_name", None)
    if full and "first_name" not in values and "last_name" not in values:
        values.update(split_full_name(full, surname_first=_is_fio_column(layout)))
    if "birthday" in values and (m := _RU_DATE.match(values["birthday"])):
        values["birthday"] = f"{m[3]}-{int(m[2]):02d}-{int(m[1]):02d}"
    if "country" in values:
        values["country"] = COUNTRIES.get(header_key(values["country"]), values["country"])
    return values, custom, tags


def _is_fio_column(layout: FileLayout) -> bool:
    return any(
        c.target == "full_name" and header_key(c.name).startswith(("фио", "фамилия"))
        for c in layout.columns
    )


def split_full_name(full: str, surname_first: bool) -> dict[str, str]:
    """'Иванов Иван Иванович' → Иван / Иванов; 'Ivan Petrov' → Ivan / Petrov.

    Russian ФИО is surname first; a patronymic in third place confirms that order whatever the
    header says. Two words follow the header (ФИО: surname first; "full name": given name first),
    since "Иван Петрович" may be a name and a patronymic or a name and a surname. The patronymic
    itself is dropped (there is no field for it); map the column to a custom field to keep it.
    """
    words = full.split()
    if len(words) == 1:
        return {"first_name": words[0]}
    if len(words) == 3 and _PATRONYMIC.search(words[2]):
        return {"last_name": words[0], "first_name": words[1]}
    if surname_first:
        return {"last_name": words[0], "first_name": " ".join(words[1:])}
    return {"first_name": " ".join(words[:-1]), "last_name": words[-1]}
