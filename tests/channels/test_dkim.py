"""DKIM as a receiver checks it: keys and the TXT records that publish them, signatures that verify
against those records (rsa-sha256 and ed25519-sha256, alone and together) whatever the message's
whitespace, folding and line endings, and stop verifying when the message is changed, and `nurture dkim new`
as an operator runs it. The receiver is dkimpy; DNS is a fake lookup: no network."""

from __future__ import annotations

import base64
import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from channels.email.dkim import SIGNED_HEADERS, DkimKey, Signer, key_from_pem, new_key, sign_all, write_private_key
from core.errors import Conflict, Invalid

ROOT = Path(__file__).resolve().parents[2]

MESSAGE = (
    b"From: Shop <news@example.com>\r\n"
    b"To: ivan@example.org\r\n"
    b"Subject: Spring sale\r\n"
    b"Date: Mon, 02 Mar 2026 09:00:00 +0000\r\n"
    b"Message-ID: <m1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=\"utf-8\"\r\n"
    b"Content-Transfer-Encoding: 7bit\r\n"
    b"X-Mailer: nurture\r\n"
    b"\r\n"
    b"Twenty percent off everything until Sunday.\r\n"
)
HEAD = MESSAGE[:MESSAGE.index(b"\r\n\r\n") + 4]  # the header block and the empty line after it
ALGORITHMS = ["rsa", "ed25519"]


@pytest.fixture(scope="module")
def keys() -> dict[str, DkimKey]:
    return {alg: new_key(alg, "s2026", "example.com") for alg in ("rsa", "ed25519")}


def dns(*published: DkimKey | tuple[str, str]) -> Callable[..., bytes | None]:
    """A TXT lookup that knows only these records (keys, or name and value as an operator published them)."""
    pairs = [(p.dns_name, p.dns_value) if isinstance(p, DkimKey) else p for p in published]
    records = {f"{name}.".encode(): value.encode() for name, value in pairs}

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    return lookup


def signed_header_names(signed: bytes) -> list[str]:
    field = dkim.DKIM(signed).headers[0][1]
    h = re.search(rb"\bh=([^;]+);", field.replace(b"\r\n", b""))
    assert h is not None
    return [name.strip().decode() for name in h.group(1).split(b":")]


def verifies(signed: bytes, idx: int, *published: DkimKey) -> bool:
    """Whether the idx-th DKIM-Signature of the message verifies, as dkim.verify() says of the first."""
    try:
        return bool(dkim.DKIM(signed).verify(idx=idx, dnsfunc=dns(*published)))
    except dkim.DKIMException:
        return False


def signature_field(signed: bytes, linesep: bytes = b"\r\n") -> list[bytes]:
    """The lines of the first DKIM-Signature field of a signed message, without their line endings."""
    lines = signed.split(linesep)
    end = next(i for i in range(1, len(lines)) if not lines[i].startswith(b"\t"))
    return lines[:end]


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_a_signed_message_verifies_against_the_published_record(keys: dict[str, DkimKey], algorithm: str) -> None:
    key = keys[algorithm]
    signed = Signer.for_key(key).sign(MESSAGE)

    assert signed.startswith(b"DKIM-Signature: ") and signed.endswith(MESSAGE)
    assert f"a={algorithm}-sha256".encode() in signed and b"c=relaxed/relaxed" in signed
    assert dkim.verify(signed, dnsfunc=dns(key))


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_a_changed_body_or_subject_no_longer_verifies(keys: dict[str, DkimKey], algorithm: str) -> None:
    key = keys[algorithm]
    signed = Signer.for_key(key).sign(MESSAGE)

    assert not dkim.verify(signed.replace(b"Twenty percent", b"Ninety percent"), dnsfunc=dns(key))
    assert not dkim.verify(signed.replace(b"Subject: Spring sale", b"Subject: Spring SALE!"), dnsfunc=dns(key))


def test_relaxed_canonicalization_survives_a_relay_refolding_whitespace(keys: dict[str, DkimKey]) -> None:
    signed = Signer.for_key(keys["ed25519"]).sign(MESSAGE)
    relayed = signed.replace(b"Subject: Spring sale", b"Subject:   Spring\r\n\tsale").replace(
        b"until Sunday.\r\n", b"until  Sunday.   \r\n\r\n"
    )

    assert dkim.verify(relayed, dnsfunc=dns(keys["ed25519"]))


def test_a_signature_from_another_key_under_the_same_name_fails(keys: dict[str, DkimKey]) -> None:
    impostor = new_key("ed25519", "s2026", "example.com")
    signed = Signer.for_key(impostor).sign(MESSAGE)

    assert not dkim.verify(signed, dnsfunc=dns(keys["ed25519"]))


def test_dual_signing_adds_an_rsa_and_an_ed25519_signature_that_both_verify(keys: dict[str, DkimKey]) -> None:
    rsa_key = new_key("rsa", "r2026", "example.com")
    ed_key = new_key("ed25519", "e2026", "example.com")
    signed = sign_all(MESSAGE, [Signer.for_key(rsa_key), Signer.for_key(ed_key)])

    checker = dkim.DKIM(signed)
    assert [name for name, _ in checker.headers[:2]] == [b"DKIM-Signature", b"DKIM-Signature"]
    assert checker.verify(idx=0, dnsfunc=dns(rsa_key, ed_key))
    assert checker.verify(idx=1, dnsfunc=dns(rsa_key, ed_key))
    assert signed.endswith(MESSAGE)


def test_only_the_listed_headers_that_are_present_are_signed(keys: dict[str, DkimKey]) -> None:
    signed = Signer.for_key(keys["ed25519"]).sign(MESSAGE)

    assert signed_header_names(signed) == [
        "from", "to", "subject", "date", "message-id", "mime-version", "content-type",
    ]


def test_a_message_with_lf_line_endings_is_signed_with_lf_and_verifies(keys: dict[str, DkimKey]) -> None:
    message = MESSAGE.replace(b"\r\n", b"\n")
    signed = Signer.for_key(keys["rsa"]).sign(message)

    assert b"\r" not in signed
    assert dkim.verify(signed, dnsfunc=dns(keys["rsa"]))


BODIES = {
    "whitespace at the end of lines": b"Twenty percent off  \r\neverything\t \r\nuntil Sunday. \t \r\n",
    "runs of spaces and tabs inside lines": b"Twenty \t  percent\t\toff\r\n  everything.\r\n",
    "whitespace-only lines at the end": b"Twenty percent off.\r\n \r\n\t\r\n  \t \r\n",
    "many empty lines at the end": b"Twenty percent off.\r\n" + b"\r\n" * 200,
    "no line ending at the end": b"Twenty percent off.\r\nUntil Sunday.",
    "an empty body": b"",
    "only empty lines": b"\r\n\r\n\r\n",
    "empty lines inside": b"Twenty percent off.\r\n\r\n\r\nUntil Sunday.\r\n",
    "a carriage return inside a line": b"Twenty percent\roff.\r\n",
    "bare line feeds": b"Twenty percent off.\nUntil Sunday.\r\nCheers.\n\n",
    "8-bit text": "Скидка  20% на всё \r\nдо воскресенья.\r\n".encode(),
}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_a_body_verifies_whatever_its_whitespace_and_empty_lines(
    keys: dict[str, DkimKey], algorithm: str, body: bytes
) -> None:
    signed = Signer.for_key(keys[algorithm]).sign(HEAD + body)

    assert dkim.verify(signed, dnsfunc=dns(keys[algorithm]))


def test_a_message_of_headers_only_verifies(keys: dict[str, DkimKey]) -> None:
    for message in (HEAD[:-2], HEAD[:-4]):  # no empty line after the header, and no line ending at all
        assert dkim.verify(Signer.for_key(keys["ed25519"]).sign(message), dnsfunc=dns(keys["ed25519"]))


def test_whitespace_ending_a_body_without_a_line_ending_is_signed_as_smtp_delivers_it(
    keys: dict[str, DkimKey],
) -> None:
    # An SMTP client ends the message with CRLF whatever it is handed; the receiver checks that.
    signed = Signer.for_key(keys["rsa"]).sign(HEAD + b"Until Sunday. \t ")

    assert dkim.verify(signed + b"\r\n", dnsfunc=dns(keys["rsa"]))


FOLDED = (
    b"From: =?utf-8?q?Shop?=\r\n  <news@example.com>\r\n"
    b"To: ivan@example.org,\r\n\tmaria@example.org, \r\n  petr@example.org\r\n"
    b"Subject:Spring\r\n sale,  \t twenty\r\n\tpercent off   \r\n"
    b"Date:   Mon, 02 Mar 2026 09:00:00 +0000\r\n"
    b"Message-ID: <m1@example.com>\r\n"
    b"X-Mailer: nurture\r\n"
    b"\r\n"
    b"Twenty percent off everything until Sunday.\r\n"
)
UTF8 = (
    "From: Магазин <news@example.com>\r\n"
    "To: Иван <ivan@example.org>\r\n"
    "Subject: Весенняя  распродажа \r\n"
    "\r\n"
    "Скидка 20% на всё.\r\n"
).encode()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("message", [FOLDED, UTF8], ids=["folded headers", "8-bit header text"])
@pytest.mark.parametrize("linesep", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_folded_and_8_bit_headers_verify_with_crlf_or_lf(
    keys: dict[str, DkimKey], algorithm: str, message: bytes, linesep: bytes
) -> None:
    signed = Signer.for_key(keys[algorithm]).sign(message.replace(b"\r\n", linesep))

    assert dkim.verify(signed, dnsfunc=dns(keys[algorithm]))
    assert signed_header_names(signed)[:3] == ["from", "to", "subject"]


def test_a_repeated_header_is_signed_from_its_bottom_most_instance(keys: dict[str, DkimKey]) -> None:
    # RFC 6376 5.4.2: h= names "to" once, which stands for the last To field.
    message = HEAD.replace(b"X-Mailer: nurture\r\n", b"To: maria@example.org\r\n") + b"Hello.\r\n"
    signed = Signer.for_key(keys["ed25519"]).sign(message)

    assert signed_header_names(signed).count("to") == 1
    assert dkim.verify(signed, dnsfunc=dns(keys["ed25519"]))
    assert not dkim.verify(signed.replace(b"To: maria@", b"To: mallory@"), dnsfunc=dns(keys["ed25519"]))
    assert dkim.verify(signed.replace(b"To: ivan@", b"To: mallory@"), dnsfunc=dns(keys["ed25519"]))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(
    ("original", "changed"),
    [
        (b"until Sunday.\r\n", b"until Sunday.\r\nAnd Monday.\r\n"),
        (b"Twenty percent", b"Twenty  per cent"),
        (b"From: Shop <news@", b"From: Shop <sales@"),
        (b"To: ivan@example.org\r\n", b""),
        (b"Date: Mon, 02 Mar", b"Date: Tue, 03 Mar"),
        (b"Content-Type: text/plain", b"Content-Type: text/html"),
        (b"X-Mailer: nurture\r\n", b"X-Mailer: nurture\r\nSubject: Ninety percent off\r\n"),
    ],
    ids=["line added to the body", "word changed in the body", "from", "to removed", "date", "content-type",
         "second subject below the signed one"],
)
def test_a_change_to_the_body_or_a_signed_header_fails(
    keys: dict[str, DkimKey], algorithm: str, original: bytes, changed: bytes
) -> None:
    signed = Signer.for_key(keys[algorithm]).sign(MESSAGE)
    assert original in signed

    assert not dkim.verify(signed.replace(original, changed, 1), dnsfunc=dns(keys[algorithm]))


def test_a_header_that_is_not_signed_may_change(keys: dict[str, DkimKey]) -> None:
    signed = Signer.for_key(keys["rsa"]).sign(MESSAGE)

    assert dkim.verify(signed.replace(b"X-Mailer: nurture", b"X-Mailer: relay 2.0"), dnsfunc=dns(keys["rsa"]))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("linesep", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_the_signature_field_is_folded_with_tabs_in_short_lines_of_the_message_own_line_ending(
    keys: dict[str, DkimKey], frozen_now: datetime, algorithm: str, linesep: bytes
) -> None:
    all_signed = b"".join(f"{name}: x\r\n".encode() for name in SIGNED_HEADERS[7:])
    message = HEAD.replace(b"X-Mailer: nurture\r\n", all_signed).replace(b"\r\n", linesep) + b"Hello." + linesep
    signed = Signer.for_key(keys[algorithm]).sign(message)

    lines = signature_field(signed, linesep)
    assert signed == linesep.join(lines) + linesep + message
    assert all(len(line) <= 78 for line in lines) and all(line.startswith(b"\t") for line in lines[1:])
    assert b"\r" not in signed if linesep == b"\n" else signed.count(b"\n") == signed.count(b"\r\n")
    tags = dkim.util.parse_tag_value(re.sub(rb"\r?\n\t", b"", b"".join(lines)).partition(b":")[2])
    assert list(tags) == [b"v", b"a", b"c", b"d", b"s", b"t", b"h", b"bh", b"b"]
    assert tags[b"t"] == str(int(frozen_now.timestamp())).encode()
    assert signed_header_names(signed) == [name.lower() for name in SIGNED_HEADERS]
    assert dkim.verify(signed, dnsfunc=dns(keys[algorithm]))


def test_signing_all_at_once_gives_each_signer_own_signature_and_all_verify(frozen_now: datetime) -> None:
    rsa_key, ed_key = new_key("rsa", "r2026", "example.com"), new_key("ed25519", "e2026", "example.com")
    rsa_signer, ed_signer = Signer.for_key(rsa_key), Signer.for_key(ed_key)
    message = FOLDED.replace(b"\r\n", b"\n")

    signed = sign_all(message, [rsa_signer, ed_signer])

    # Both algorithms are deterministic, and the clock is frozen: the same fields as signing one by one.
    assert signed == rsa_signer.signature(message) + ed_signer.signature(message) + message
    assert verifies(signed, 0, rsa_key, ed_key) and verifies(signed, 1, rsa_key, ed_key)
    tampered = signed.replace(b"until Sunday", b"until Monday")
    assert not verifies(tampered, 0, rsa_key, ed_key) and not verifies(tampered, 1, rsa_key, ed_key)


@pytest.mark.parametrize(
    "head",
    [
        b"From: news@example.com\r\nNot a header\r\nTo: ivan@example.org\r\n",
        b" folded: before anything\r\nFrom: news@example.com\r\n",
        b"From: news@example.com\r\nBad Name: x\r\n",
    ],
    ids=["line without a colon", "continuation first", "space in a name"],
)
def test_a_header_with_a_line_that_is_not_a_field_cannot_be_signed(keys: dict[str, DkimKey], head: bytes) -> None:
    with pytest.raises(Invalid) as caught:
        Signer.for_key(keys["ed25519"]).sign(head + b"\r\nHello.\r\n")
    assert caught.value.field == "message"


def test_a_message_without_from_cannot_be_signed(keys: dict[str, DkimKey]) -> None:
    with pytest.raises(Invalid) as caught:
        Signer.for_key(keys["rsa"]).sign(MESSAGE.replace(b"From: Shop <news@example.com>\r\n", b""))
    assert caught.value.field == "message"


def test_the_rsa_record_publishes_the_public_key_in_255_character_strings(keys: dict[str, DkimKey]) -> None:
    key = keys["rsa"]

    assert key.dns_name == "s2026._domainkey.example.com"
    assert key.dns_value.startswith("v=DKIM1; k=rsa; p=MII")
    assert len(key.dns_value) > 255
    strings = re.findall(r'"([^"]*)"', key.zone_line)
    assert key.zone_line.startswith("s2026._domainkey.example.com. IN TXT \"")
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings)
    assert "".join(strings) == key.dns_value
    assert key.private_pem.startswith("-----BEGIN PRIVATE KEY-----")


def test_the_ed25519_record_is_the_bare_32_byte_public_key(keys: dict[str, DkimKey]) -> None:
    key = keys["ed25519"]

    assert key.dns_value.startswith("v=DKIM1; k=ed25519; p=")
    assert len(base64.b64decode(key.dns_value.rpartition("p=")[2])) == 32
    assert key.zone_line == f'{key.dns_name}. IN TXT "{key.dns_value}"'


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_the_record_of_a_key_read_back_from_pem_is_the_same(keys: dict[str, DkimKey], algorithm: str) -> None:
    key = keys[algorithm]

    assert key_from_pem(key.private_pem, "s2026", "example.com") == key


def test_names_are_lower_cased_and_unicode_domains_become_xn_labels() -> None:
    key = new_key("ed25519", "Mail2026", "Пример.РФ")

    assert (key.selector, key.domain) == ("mail2026", "xn--e1afmkfd.xn--p1ai")
    assert key.dns_name == "mail2026._domainkey.xn--e1afmkfd.xn--p1ai"


@pytest.mark.parametrize(
    ("selector", "domain", "field"),
    [
        ("s1", "localhost", "domain"),
        ("s1", "exa mple.com", "domain"),
        ("s1", "-bad.example.com", "domain"),
        ("s1", "a" * 64 + ".com", "domain"),
        ("s_1", "example.com", "selector"),
        ("", "example.com", "selector"),
        ("s1..x", "example.com", "selector"),
    ],
)
def test_a_name_that_is_not_a_dns_name_is_refused(selector: str, domain: str, field: str) -> None:
    with pytest.raises(Invalid) as caught:
        new_key("ed25519", selector, domain)
    assert caught.value.field == field


def test_an_unknown_algorithm_is_refused() -> None:
    with pytest.raises(Invalid) as caught:
        new_key("dsa", "s1", "example.com")
    assert caught.value.field == "algorithm"


def test_a_signer_refuses_what_is_not_an_rsa_or_ed25519_private_key() -> None:
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for pem in (b"not a key", ec_pem):
        with pytest.raises(Invalid) as caught:
            Signer("s1", "example.com", pem)
        assert caught.value.field == "key"


def test_the_private_key_file_is_owner_only_and_never_overwritten(tmp_path: Path, keys: dict[str, DkimKey]) -> None:
    path = tmp_path / "dkim" / "s2026.example.com.rsa.pem"
    write_private_key(path, keys["rsa"])

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(Conflict):
        write_private_key(path, keys["ed25519"])
    assert path.read_text() == keys["rsa"].private_pem


# `nurture dkim new`, as an operator runs it


def nurture(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NURTURE_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "dkim", "new", *args], capture_output=True, text=True,
        env=env, cwd=ROOT, timeout=60,
    )


def printed_record(stdout: str) -> tuple[str, str]:
    """The record (name, value) as the operator would publish it, read from what the command printed."""
    name = re.search(r"^name:\s+(\S+)$", stdout, re.MULTILINE)
    value = re.search(r"^value:\s+(.+)$", stdout, re.MULTILINE)
    assert name is not None and value is not None, stdout
    return name.group(1), value.group(1)


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_dkim_new_writes_a_key_whose_printed_record_verifies_its_signatures(tmp_path: Path, algorithm: str) -> None:
    done = nurture(tmp_path, "--domain", "example.com", "--selector", "s2026", "--algorithm", algorithm)

    assert done.returncode == 0, done.stderr
    path = tmp_path / "dkim" / f"s2026.example.com.{algorithm}.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    record = printed_record(done.stdout)
    assert record[0] == "s2026._domainkey.example.com"
    assert f"s2026._domainkey.example.com. IN TXT \"v=DKIM1; k={algorithm}; p=" in done.stdout
    signed = Signer("s2026", "example.com", path.read_text()).sign(MESSAGE)
    assert dkim.verify(signed, dnsfunc=dns(record))


def test_dkim_new_refuses_to_overwrite_an_existing_key(tmp_path: Path) -> None:
    out = tmp_path / "keys" / "mail.pem"
    args = ("--domain", "example.com", "--selector", "s1", "--algorithm", "ed25519", "--out", str(out))
    first = nurture(tmp_path, *args)
    assert first.returncode == 0, first.stderr
    before = out.read_text()

    again = nurture(tmp_path, *args)

    assert again.returncode != 0
    assert "exists" in again.stderr and "Traceback" not in again.stderr
    assert out.read_text() == before


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--domain", "example..com", "--selector", "s1"], "domain"),
        (["--domain", "example.com", "--selector", "s 1"], "selector"),
        (["--domain", "example.com", "--selector", "s1", "--algorithm", "dsa"], "algorithm"),
    ],
)
def test_dkim_new_with_a_bad_name_exits_2_naming_the_field(tmp_path: Path, args: list[str], field: str) -> None:
    done = nurture(tmp_path, *args)

    assert done.returncode == 2
    assert f"error ({field})" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "dkim").exists()
