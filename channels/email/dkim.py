"""DKIM for outgoing mail: new keys with the DNS record that publishes them, and signing with them
(rsa-sha256, and ed25519-sha256 per RFC 8463). Pure apart from writing a new private key file."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import dkim  # dkimpy
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from core.errors import Conflict, Invalid

Algorithm = Literal["rsa", "ed25519"]
ALGORITHMS: tuple[Algorithm, ...] = get_args(Algorithm)
RSA_BITS = 2048
MIN_RSA_BITS = 1024  # what receivers still accept (RFC 8301); new keys are RSA_BITS
SIGNED_HEADERS = (
    "From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type",
    "List-Unsubscribe", "List-Unsubscribe-Post", "Feedback-ID",
)
TXT_STRING_MAX = 255  # one character-string in a TXT record (RFC 1035 3.3)

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_HEADER_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.MULTILINE)
_END_OF_HEADERS = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True)
class DkimKey:
    selector: str
    domain: str
    algorithm: Algorithm
    private_pem: str  # PKCS#8, unencrypted: keep it to the sending hosts
    dns_name: str  # <selector>._domainkey.<domain>
    dns_value: str  # the TXT record's text, e.g. "v=DKIM1; k=ed25519; p=…"

    @property
    def txt_strings(self) -> list[str]:
        """The TXT value cut into character-strings of at most 255 characters (a 2048-bit RSA key needs two)."""
        value = self.dns_value
        return [value[i:i + TXT_STRING_MAX] for i in range(0, len(value), TXT_STRING_MAX)]

    @property
    def zone_line(self) -> str:
        """The record as one line of a BIND zone file."""
        return f"{self.dns_name}. IN TXT " + " ".join(f'"{part}"' for part in self.txt_strings)


def dns_name(value: str, field: str, min_labels: int = 1) -> str:
    """A DNS name as DKIM puts it in d= and s=: LDH labels, lower-cased; Unicode names become xn-- labels."""
    name = value.strip().rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise Invalid(f"not a valid DNS name: {value!r}", field=field) from None
    labels = name.split(".")
    if len(name) > 253 or len(labels) < min_labels or not all(_LABEL.fullmatch(label) for label in labels):
        kind = "domain (like example.com)" if min_labels > 1 else "DNS name (letters, digits, hyphens, dots)"
        raise Invalid(f"not a valid {kind}: {value!r}", field=field)
    return name


def new_key(algorithm: str, selector: str, domain: str) -> DkimKey:
    """A fresh key pair: "rsa" (2048 bits) or "ed25519"."""
    selector, domain = dns_name(selector, "selector"), dns_name(domain, "domain", min_labels=2)
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    elif algorithm == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise Invalid(f"unknown algorithm {algorithm!r}: use {' or '.join(ALGORITHMS)}", field="algorithm")
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_from_pem(pem.decode("ascii"), selector, domain)


def key_from_pem(private_pem: str | bytes, selector: str, domain: str) -> DkimKey:
    """The DNS record of a private key already in hand (to publish it again, or check what is published)."""
    selector, domain = dns_name(selector, "selector"), dns_name(domain, "domain", min_labels=2)
    private = _load(private_pem)
    if isinstance(private, rsa.RSAPrivateKey):
        algorithm: Algorithm = "rsa"
        public = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        algorithm = "ed25519"  # RFC 8463: the bare 32-byte key, not wrapped in ASN.1
        public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pem = private_pem.decode("ascii") if isinstance(private_pem, bytes) else private_pem
    return DkimKey(
        selector=selector, domain=domain, algorithm=algorithm, private_pem=pem,
        dns_name=f"{selector}._domainkey.{domain}",
        dns_value=f"v=DKIM1; k={algorithm}; p={base64.b64encode(public).decode('ascii')}",
    )


def write_private_key(path: Path, key: DkimKey) -> None:
    """Write the private key readable by its owner only; never over an existing file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        # O_EXCL: two operators running the command at once cannot overwrite each other's key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise Conflict(f"{path} exists already; not overwriting a key that may be published", field="out") from None
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(key.private_pem)


class Signer:
    """Signs messages with one key. Build it once per key: the key is read and checked here, not per message."""

    def __init__(self, selector: str, domain: str, private_pem: str | bytes) -> None:
        self.selector = dns_name(selector, "selector")
        self.domain = dns_name(domain, "domain", min_labels=2)
        private = _load(private_pem)
        # dkimpy wants PKCS#1/PKCS#8 PEM for RSA, and for Ed25519 the base64 of the raw 32-byte seed.
        if isinstance(private, rsa.RSAPrivateKey):
            self.algorithm: Algorithm = "rsa"
            self._key = private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        else:
            self.algorithm = "ed25519"
            raw = private.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            self._key = base64.b64encode(raw)
        self._signature_algorithm = b"rsa-sha256" if self.algorithm == "rsa" else b"ed25519-sha256"

    @classmethod
    def for_key(cls, key: DkimKey) -> Signer:
        return cls(key.selector, key.domain, key.private_pem)

    def signature(self, message: bytes) -> bytes:
        """The DKIM-Signature header field for `message` (relaxed/relaxed), with its line ending."""
        present = _header_names(message)
        if "from" not in present:
            raise Invalid("a message to sign needs a From header", field="message")
        headers = [name.encode("ascii") for name in SIGNED_HEADERS if name.lower() in present]
        crlf = message.split(b"\n", 1)[0].endswith(b"\r")
        try:
            return bytes(dkim.sign(
                message, self.selector.encode("ascii"), self.domain.encode("ascii"), self._key,
                canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=self._signature_algorithm,
                include_headers=headers, linesep=b"\r\n" if crlf else b"\n",
            ))
        except dkim.DKIMException as exc:
            raise Invalid(f"cannot sign this message: {exc}", field="message") from None

    def sign(self, message: bytes) -> bytes:
        """The message with its DKIM-Signature header prepended."""
        return self.signature(message) + message


def sign_all(message: bytes, signers: Sequence[Signer]) -> bytes:
    """Several signatures at once (say RSA for every receiver and Ed25519 for those that check it),
    each over the unsigned message, so the order of the signers does not matter."""
    return b"".join(signer.signature(message) for signer in signers) + message


def _load(private_pem: str | bytes) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    data = private_pem.encode("ascii", "replace") if isinstance(private_pem, str) else private_pem
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise Invalid("not an unencrypted PEM private key", field="key") from None
    if isinstance(private, rsa.RSAPrivateKey):
        if private.key_size < MIN_RSA_BITS:
            raise Invalid(f"an RSA key of {private.key_size} bits is too short for DKIM", field="key")
        return private
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return private
    raise Invalid("DKIM needs an RSA or Ed25519 key", field="key")


def _header_names(message: bytes) -> set[str]:
    head = _END_OF_HEADERS.split(message, maxsplit=1)[0]
    return {m.group(1).decode("ascii").lower() for m in _HEADER_NAME.finditer(head)}
