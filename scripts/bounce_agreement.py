"""How often the bounce classifier agrees with the expected labels of a sample folder (sisimai's
tables): one JSON object with the share of recipients whose hard flag, status, reason and reply
code agree. The labels name no addresses, so recipients are matched by their order in the message;
a recipient the classifier misses counts against every figure.

Usage: python scripts/bounce_agreement.py [FOLDER] [--verbose]
       (FOLDER defaults to ../shared/data/bounces; --verbose lists each disagreement first)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from channels.email.bounces import classify  # noqa: E402

FOLDER = Path(__file__).resolve().parents[2] / "shared" / "data" / "bounces"
FIELDS = ("hard", "status", "reason", "reply_code")


def compare(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    labels: dict[str, list[dict[str, Any]]] = json.loads((folder / "labels.json").read_text("utf-8"))
    agreed = dict.fromkeys(FIELDS, 0)
    total = missing = extra = 0
    disagreements: list[dict[str, Any]] = []
    for name, expected in sorted(labels.items()):
        found = classify((folder / name).read_bytes()).recipients
        extra += max(0, len(found) - len(expected))
        for index, label in enumerate(expected):
            total += 1
            if index >= len(found):
                missing += 1
                disagreements.append({"file": name, "index": index, "missing": True, "expected": label})
                continue
            got = found[index]
            differ = [f for f in FIELDS if getattr(got, f) != label[f]]
            for f in FIELDS:
                agreed[f] += f not in differ
            if differ:
                disagreements.append({
                    "file": name, "index": index, "recipient": got.recipient, "differ": differ,
                    "expected": {f: label[f] for f in FIELDS}, "got": {f: getattr(got, f) for f in FIELDS},
                    "diagnostic": got.diagnostic[:160],
                })
    figures: dict[str, Any] = {f: round(agreed[f] / total, 4) if total else 0.0 for f in FIELDS}
    figures.update({"files": len(labels), "recipients": total, "missing": missing, "extra": extra})
    return figures, disagreements


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=FOLDER)
    parser.add_argument("--verbose", action="store_true", help="list every disagreement before the figures")
    args = parser.parse_args()
    if not (args.folder / "labels.json").is_file():
        sys.exit(f"error: no labels.json in {args.folder}")
    figures, disagreements = compare(args.folder)
    if args.verbose:
        for row in disagreements:
            print(json.dumps(row, ensure_ascii=False))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
