"""DKIM signing speed on one core: a composed ~30 KB marketing message (Russian text and HTML)
signed again and again with a 2048-bit RSA key, an Ed25519 key, and both at once; and, as the baseline,
with the same keys by dkimpy's pure-Python signer (what channels.email.dkim used before). Prints one JSON line.

    python bench/signing.py [--seconds S] [--kb N]
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dkim  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa as rsa_keys  # noqa: E402

from channels.email.compose import Feedback, OutgoingEmail, compose  # noqa: E402
from channels.email.dkim import SIGNED_HEADERS, DkimKey, Signer, new_key, sign_all  # noqa: E402


def message(kb: int) -> bytes:
    paragraph = "Здравствуйте, Иван! До воскресенья скидка 20% на весь каталог, доставка бесплатно. "
    raw = b""
    repeat = 1
    while len(raw) < kb * 1024:  # base64 makes the Cyrillic bodies a third longer: grow to the target size
        raw, _ = compose(OutgoingEmail(
            message_id="0192f3a4-7b6c-7def-a9b0-123456789abc", from_address="news@shop.example.com",
            from_name="Магазин", to_address="ivan@example.org", subject="Весенняя распродажа",
            text=paragraph * repeat, html=f"<p>{paragraph}</p>" * repeat,
            bounce_token="GEZDGNBVGY3TQOJQGEZDGNBV", bounce_domain="bounce.shop.example.com",
            unsubscribe_url="https://shop.example.com/u/GEZDGNBVGY3TQOJQ",
            feedback=Feedback("spring-sale", "2", "acme"),
        ))
        repeat += 5
    return raw


def dkimpy_signer(key: DkimKey, raw: bytes) -> Callable[[], bytes]:
    """Signing `raw` with dkimpy as the old Signer did: PKCS#1 PEM for RSA, the base64 seed for Ed25519."""
    private = serialization.load_pem_private_key(key.private_pem.encode("ascii"), password=None)
    if isinstance(private, rsa_keys.RSAPrivateKey):
        secret = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    else:
        secret = base64.b64encode(private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        ))
    head = raw.split(b"\r\n\r\n", 1)[0]
    present = {line.split(b":", 1)[0].lower() for line in head.split(b"\r\n") if line[:1] not in (b" ", b"\t")}
    headers = [name.encode("ascii") for name in SIGNED_HEADERS if name.lower().encode("ascii") in present]

    def sign() -> bytes:
        return bytes(dkim.sign(
            raw, key.selector.encode("ascii"), key.domain.encode("ascii"), secret,
            canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=f"{key.algorithm}-sha256".encode("ascii"),
            include_headers=headers, linesep=b"\r\n",
        )) + raw

    return sign


def rate(sign: Callable[[], bytes], seconds: float) -> float:
    sign()  # warm up
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        sign()
        done += 1
    return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0, help="Per figure")
    parser.add_argument("--kb", type=int, default=30, help="Message size")
    args = parser.parse_args()

    raw = message(args.kb)
    rsa_key, ed25519_key = new_key("rsa", "r2026", "shop.example.com"), new_key("ed25519", "e2026", "shop.example.com")
    rsa, ed25519 = Signer.for_key(rsa_key), Signer.for_key(ed25519_key)
    print(json.dumps({
        "bench": "dkim",
        "message_bytes": len(raw),
        "rsa_per_s": round(rate(lambda: rsa.sign(raw), args.seconds), 1),
        "ed25519_per_s": round(rate(lambda: ed25519.sign(raw), args.seconds), 1),
        "both_per_s": round(rate(lambda: sign_all(raw, [rsa, ed25519]), args.seconds), 1),
        "dkimpy_rsa_per_s": round(rate(dkimpy_signer(rsa_key, raw), args.seconds), 1),
        "dkimpy_ed25519_per_s": round(rate(dkimpy_signer(ed25519_key, raw), args.seconds), 1),
    }))


if __name__ == "__main__":
    main()
