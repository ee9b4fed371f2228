"""Seeded synthetic people for benchmarks: Russian and English names, companies, phones."""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from pathlib import Path

RU_FIRST = ["Иван", "Мария", "Алексей", "Ольга", "Дмитрий", "Анна", "Сергей", "Елена", "Пётр", "Наталья"]
RU_LAST = ["Иванов", "Смирнова", "Кузнецов", "Попова", "Соколов", "Лебедева", "Козлов", "Новикова"]
EN_FIRST = ["John", "Mary", "James", "Patricia", "Robert", "Jennifer", "Michael", "Linda"]
EN_LAST = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson"]
COMPANIES = ['ООО "Ромашка"', "АО Вектор", "ИП Сидоров", "Acme Corp", "Globex", "Initech", "Umbrella"]
CITIES = ["Москва", "Санкт-Петербург", "Казань", "Новосибирск", "London", "Berlin"]
TITLES = ["Директор", "Маркетолог", "Главный бухгалтер", "CTO", "Sales manager"]
TLDS = ["example.com", "example.ru", "example.org"]


def person(rng: random.Random, index: int) -> dict[str, str]:
    russian = rng.random() < 0.6
    first = rng.choice(RU_FIRST if russian else EN_FIRST)
    last = rng.choice(RU_LAST if russian else EN_LAST)
    return {
        "email": f"user{index}@{rng.choice(TLDS)}",
        "phone": f"+7 9{rng.randrange(10, 99)} {rng.randrange(100, 999)}-{rng.randrange(10, 99)}-"
        f"{rng.randrange(10, 99)}",
        "first_name": first,
        "last_name": last,
        "company": rng.choice(COMPANIES),
        "city": rng.choice(CITIES),
        "title": rng.choice(TITLES),
    }


def lead_rows(rows: int, seed: int = 42, duplicates: float = 0.03, broken: float = 0.01) -> Iterator[list[str]]:
    """Rows as a Russian Excel user would export them (Имя;Фамилия;E-mail;…).

    `duplicates` of the rows repeat an earlier email with other details; `broken` have a bad
    email, a bad phone, or neither.
    """
    rng = random.Random(seed)
    for index in range(rows):
        p = person(rng, index)
        roll = rng.random()
        if roll < broken:
            kind = rng.randrange(3)
            if kind == 0:
                p["email"] = p["email"].replace("@", " at ")
            elif kind == 1:
                p["phone"] = "12"
            else:
                p["email"] = p["phone"] = ""
        elif roll < broken + duplicates and index > 0:
            p["email"] = f"user{rng.randrange(index)}@{rng.choice(TLDS)}"
        tags = "выставка, 2026" if rng.random() < 0.2 else ""
        yield [p["first_name"], p["last_name"], p["email"], p["phone"], p["company"], p["city"],
               p["title"], tags, "spring_sale" if rng.random() < 0.5 else ""]


HEADER = ["Имя", "Фамилия", "E-mail", "Телефон", "Компания", "Город", "Должность", "Теги", "utm_campaign"]


def write_leads_csv(path: Path, rows: int, seed: int = 42) -> None:
    """A UTF-8 (with BOM) ';'-separated file, as Excel's "CSV UTF-8" writes it."""
    with path.open("w", encoding="utf-8-sig", newline="") as out:
        writer = csv.writer(out, delimiter=";")
        writer.writerow(HEADER)
        writer.writerows(lead_rows(rows, seed))
