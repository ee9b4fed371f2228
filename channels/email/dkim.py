"""DKIM for outgoing mail: new keys with the DNS record that publishes them, and signing with them
(rsa-sha256, and ed25519-sha256 per RFC 8463; relaxed/relaxed canonicalization of RFC 6376 3.4).
Pure apart from writing a new private key file and reading the clock for t=."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from core import clock
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
LINE_MAX = 78  # characters in a line of the DKIM-Signature field, line ending aside (RFC 5322 2.1.1)

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# The body is scanned with patterns that start with one literal byte, or plain bytes methods: the re module
# tries a pattern starting with a class or an optional part at every position, some 20 times slower.
_END_OF_HEADERS = re.compile(rb"\n\r?\n")
# A header field: its name, the colon, and the value with its continuation lines and line endings.
_FIELD = re.compile(rb"([!-9;-~]+):([^\n]*\n(?:[ \t][^\n]*\n)*)")
_BARE_LF = re.compile(rb"\n(?<!\r\n)")
_SPACE_BEFORE_SPACE_OR_CR = re.compile(rb" [ \r]")
_SPACES = re.compile(rb"  +")
_EMPTY_LINES_AT_END = re.compile(rb"(?:\r\n)*\Z")  # searched from near the end only
_SIGNED = tuple(name.lower().encode("ascii") for name in SIGNED_HEADERS)


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
        self._private = _load(private_pem)
        self.algorithm: Algorithm = "rsa" if isinstance(self._private, rsa.RSAPrivateKey) else "ed25519"
        self._start = _Folding([b"DKIM-Signature:"])  # the tags that are the same in every signature
        for tag in (
            b"v=1;", b"a=rsa-sha256;" if self.algorithm == "rsa" else b"a=ed25519-sha256;", b"c=relaxed/relaxed;",
            f"d={self.domain};".encode("ascii"), f"s={self.selector};".encode("ascii"),
        ):
            self._start.add(tag)

    @classmethod
    def for_key(cls, key: DkimKey) -> Signer:
        return cls(key.selector, key.domain, key.private_pem)

    def signature(self, message: bytes) -> bytes:
        """The DKIM-Signature header field for `message` (relaxed/relaxed), with its line ending."""
        return self._signature(_Canonical.of(message))

    def sign(self, message: bytes) -> bytes:
        """The message with its DKIM-Signature header prepended."""
        return self.signature(message) + message

    def _signature(self, message: _Canonical) -> bytes:
        field = _Folding(self._start.lines)
        field.add(b"t=%d;" % int(clock.now().timestamp()))
        field.add(b"h=")
        *listed, last = message.signed_names
        for name in listed:
            field.add(name + b":", glue=b"")
        field.add(last + b";", glue=b"")
        field.add(b"bh=")
        field.add_base64(message.body_hash)
        field.add(b";", glue=b"")
        field.add(b"b=")
        # b= signs the signed header fields, then this field with b= empty and no line ending (RFC 6376 3.7).
        unsigned = field.text(message.linesep)[len(b"DKIM-Signature:"):]
        signed = message.signed_headers + _relaxed_header(b"dkim-signature", unsigned)
        if isinstance(self._private, rsa.RSAPrivateKey):
            signature = self._private.sign(signed, padding.PKCS1v15(), hashes.SHA256())
        else:  # RFC 8463: Ed25519 signs the SHA-256 hash of the data, not the data
            signature = self._private.sign(hashlib.sha256(signed).digest())
        field.add_base64(base64.b64encode(signature))
        return field.text(message.linesep) + message.linesep


def sign_all(message: bytes, signers: Sequence[Signer]) -> bytes:
    """Several signatures at once (say RSA for every receiver and Ed25519 for those that check it),
    each over the unsigned message, so the order of the signers does not matter."""
    canonical = _Canonical.of(message)
    return b"".join(signer._signature(canonical) for signer in signers) + message


@dataclass(frozen=True)
class _Canonical:
    """What a signature covers in one message, worked out once however many keys sign it."""

    signed_names: tuple[bytes, ...]  # h=: the SIGNED_HEADERS the message has, lower-cased
    signed_headers: bytes  # those fields in relaxed form, each ending in CRLF
    body_hash: bytes  # bh=: base64 of the SHA-256 of the body in relaxed form
    linesep: bytes  # the message's own line ending, for the DKIM-Signature field

    @classmethod
    def of(cls, message: bytes) -> _Canonical:
        head, body = _split(message)
        fields = _fields(head)
        if b"from" not in fields:
            raise Invalid("a message to sign needs a From header", field="message")
        # h= names each field once, which stands for its bottom-most instance (RFC 6376 5.4.2).
        names = tuple(name for name in _SIGNED if name in fields)
        first_line = message[:message.find(b"\n") + 1]
        return cls(
            signed_names=names,
            signed_headers=b"".join([_relaxed_header(name, fields[name]) + b"\r\n" for name in names]),
            body_hash=base64.b64encode(hashlib.sha256(_relaxed_body(body)).digest()),
            linesep=b"\r\n" if first_line.endswith(b"\r\n") else b"\n",
        )


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


def _split(message: bytes) -> tuple[bytes, bytes]:
    """The header block, its last line ending in a line feed, and the body."""
    end = _END_OF_HEADERS.search(message)
    if end is None:  # headers only
        return message if message.endswith(b"\n") else message + b"\n", b""
    return message[:end.start() + 1], message[end.end():]


def _fields(head: bytes) -> dict[bytes, bytes]:
    """Each header field's value, folded as it is, by lower-cased name; the bottom-most of a repeated field."""
    fields = _FIELD.findall(head)
    # Matches do not overlap, so if their lengths add up to the whole block there is nothing between them.
    if sum(len(name) + 1 + len(value) for name, value in fields) != len(head):
        raise Invalid("cannot sign this message: its header has a line that is not a header field", field="message")
    return {name.lower(): value for name, value in fields}


def _relaxed_header(name: bytes, value: bytes) -> bytes:
    """RFC 6376 3.4.2 for a lower-cased name: the value unfolded, runs of whitespace made one space, and none
    around the colon."""
    # split() also cuts at VT, FF and a lone CR, none of which a header field may hold (RFC 5322 2.2).
    return name + b":" + b" ".join(value.split())


def _relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4: CRLF line endings, no whitespace at the end of lines, runs of whitespace made one space,
    no empty lines at the end, and an empty body for one with no text at all."""
    # Each step looks before it copies: a composed body has CRLF line endings, no tabs, and base64 or
    # quoted-printable parts with no space at the end of a line, so it is seldom copied at all.
    if _BARE_LF.search(body):
        body = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if body and not body.endswith(b"\r\n"):
        # Sent over SMTP the message ends in CRLF whatever was handed over (the client adds it): sign what
        # arrives, so whitespace ending the last line goes like any other line's.
        body += b"\r\n"
    if b"\t" in body:
        body = body.replace(b"\t", b" ")
    if _SPACE_BEFORE_SPACE_OR_CR.search(body):
        body = _SPACES.sub(b" ", body).replace(b" \r\n", b"\r\n")
    # rstrip alone could take a bare CR ending the last line's text: keep from it on to the run of CRLFs.
    empty_lines = _EMPTY_LINES_AT_END.search(body, len(body.rstrip(b"\r\n")))
    assert empty_lines is not None  # the pattern matches at the very end, if nowhere before
    end = empty_lines.start()
    if end == 0:
        return b""
    return body if end + 2 == len(body) else body[:end] + b"\r\n"


class _Folding:
    """A header field laid out in lines of at most LINE_MAX characters, folding with a tab where it may."""

    def __init__(self, lines: list[bytes]) -> None:
        self.lines = list(lines)

    def add(self, word: bytes, glue: bytes = b" ") -> None:
        """A piece that is not to be cut: after `glue` on this line if it fits, else on a line of its own."""
        if len(self.lines[-1]) + len(glue) + len(word) <= LINE_MAX:
            self.lines[-1] += glue + word
        else:
            self.lines.append(b"\t" + word)

    def add_base64(self, value: bytes) -> None:
        """Base64, which may be folded anywhere (RFC 6376 3.5): fill this line, then whole lines."""
        room = max(LINE_MAX - len(self.lines[-1]), 0)
        self.lines[-1] += value[:room]
        width = LINE_MAX - 1
        self.lines.extend(b"\t" + value[i:i + width] for i in range(room, len(value), width))

    def text(self, linesep: bytes) -> bytes:
        return linesep.join(self.lines)
