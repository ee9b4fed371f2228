"""DKIM as a receiver checks it: keys and the TXT records that publish them, signatures that verify
against those records (rsa-sha256 and ed25519-sha256, alone and together) and stop verifying when the
message is changed, and `nurture dkim new` as an operator runs it. DNS is a fake lookup: no network."""

from __future__ import annotations

import base64
import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from channels.email.dkim import DkimKey, Signer, key_from_pem, new_key, sign_all, write_private_key
from core.errors import Conflict, Invalid

ROOT = Path(__file__).resolve().parents[1]

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
