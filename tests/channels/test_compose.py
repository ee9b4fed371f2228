"""The outgoing message as a mail client and a receiving server read it: Russian headers that decode,
text and HTML alternatives, one-click unsubscribe for marketing mail only, Feedback-ID, a Message-ID
at the sending domain, wire-safe lines, the VERP envelope sender, and DKIM signatures that verify."""

from __future__ import annotations

import dataclasses
import email
import re
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from typing import Any

import dkim
import pytest

from channels.email.compose import Feedback, OutgoingEmail, bounce_address, compose, parse_bounce_address
from channels.email.dkim import Signer, new_key, sign_all
from core import clock
from core.errors import Invalid

MESSAGE_ID = "0192f3a4-7b6c-7def-a9b0-123456789abc"
UNSUBSCRIBE_URL = "https://mail.example.com/u/eyJsIjoiMDE5MmYzYTQtN2I2Yy03ZGVmLWE5YjAtMTIzNDU2Nzg5YWJjIn0.Zx1a2b.sig"
TEXT = "Здравствуйте, Иван!\n\nДо воскресенья скидка 20% на всё.\n" + "Очень длинная строка без переносов. " * 60
HTML = "<html><body><p>Здравствуйте, <b>Иван</b>!</p><p>До воскресенья скидка 20% на всё.</p></body></html>"


def outgoing(**changes: Any) -> OutgoingEmail:
    base = OutgoingEmail(
        message_id=MESSAGE_ID,
        from_address="news@shop.example.com",
        from_name="Ольга из «Магазина»",
        to_address="ivan@example.org",
        to_name="Иван Петров",
        subject="Скидка 20% на всё до воскресенья — не пропустите, Иван!",
        text=TEXT,
        html=HTML,
        bounce_token="GEZDGNBVGY3TQOJQGEZDGNBV",
        bounce_domain="bounce.shop.example.com",
        unsubscribe_url=UNSUBSCRIBE_URL,
        unsubscribe_mailto="unsubscribe+GEZDGNBVGY3TQOJQ@shop.example.com",
        feedback=Feedback(campaign="spring-sale", step="2", sender="acme"),
    )
    return dataclasses.replace(base, **changes)


def read(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_russian_subject_and_display_names_read_back_as_written() -> None:
    raw, _ = compose(outgoing())
    msg = read(raw)

    assert msg["Subject"] == "Скидка 20% на всё до воскресенья — не пропустите, Иван!"
    sender, recipient = msg["From"].addresses[0], msg["To"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == ("Ольга из «Магазина»", "news@shop.example.com")
    assert (recipient.display_name, recipient.addr_spec) == ("Иван Петров", "ivan@example.org")
    assert b"=?utf-8?" in raw.split(b"\r\n\r\n", 1)[0]  # RFC 2047 encoded words, not raw UTF-8
    assert raw.isascii()


def test_text_and_html_are_alternatives_of_one_message() -> None:
    msg = read(compose(outgoing())[0])

    assert msg.get_content_type() == "multipart/alternative"
    plain, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content().replace("\r\n", "\n") == TEXT + "\n"
    assert html.get_content().strip() == HTML
    for part in (plain, html):
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] in ("quoted-printable", "base64")


def test_a_text_only_message_is_a_single_plain_part() -> None:
    msg = read(compose(outgoing(html=None, text="Hello"))[0])

    assert msg.get_content_type() == "text/plain" and msg.get_content().strip() == "Hello"


def test_marketing_mail_offers_one_click_unsubscribe() -> None:
    msg = read(compose(outgoing())[0])

    assert msg["List-Unsubscribe"] == f"<{UNSUBSCRIBE_URL}>, <mailto:unsubscribe+GEZDGNBVGY3TQOJQ@shop.example.com>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_transactional_mail_has_no_one_click_post_but_may_keep_the_link() -> None:
    with_link = read(compose(outgoing(marketing=False, unsubscribe_mailto=None, feedback=None))[0])
    without = read(compose(outgoing(marketing=False, unsubscribe_url=None, unsubscribe_mailto=None))[0])

    assert with_link["List-Unsubscribe"] == f"<{UNSUBSCRIBE_URL}>"
    assert with_link["List-Unsubscribe-Post"] is None
    assert without["List-Unsubscribe"] is None and without["List-Unsubscribe-Post"] is None


def test_marketing_mail_without_an_unsubscribe_link_is_refused() -> None:
    with pytest.raises(Invalid) as caught:
        compose(outgoing(unsubscribe_url=None))
    assert caught.value.field == "unsubscribe_url"


@pytest.mark.parametrize("url", ["ftp://x.example.com/u/1", "https://x.example.com/u/a b", "https://x/u/<1>"])
def test_an_unusable_unsubscribe_link_is_refused(url: str) -> None:
    with pytest.raises(Invalid) as caught:
        compose(outgoing(unsubscribe_url=url))
    assert caught.value.field == "unsubscribe_url"


def test_ids_name_the_message_for_replies_and_postmaster_tools() -> None:
    msg = read(compose(outgoing())[0])

    assert msg["Message-ID"] == f"<{MESSAGE_ID}@shop.example.com>"
    assert msg["X-Nurture-Message"] == MESSAGE_ID
    assert msg["Feedback-ID"] == "spring-sale:2:acme:nurture"
    assert msg["MIME-Version"] == "1.0"


def test_long_ids_and_links_stay_literal_instead_of_encoded_words() -> None:
    campaign = "0192f3a4-7b6c-7def-a9b0-123456789abc"
    url = "https://mail.example.com/u/" + "A" * 300
    raw, _ = compose(outgoing(feedback=Feedback(campaign, campaign, campaign), unsubscribe_url=url))
    msg = read(raw)

    assert msg["Feedback-ID"] == f"{campaign}:{campaign}:{campaign}:nurture"
    assert msg["List-Unsubscribe"].startswith(f"<{url}>, <mailto:")


def test_the_date_is_the_clock_s() -> None:
    with clock.frozen(datetime(2026, 3, 2, 9, 30, tzinfo=UTC)):
        msg = read(compose(outgoing())[0])

    assert msg["Date"] == "Mon, 02 Mar 2026 09:30:00 +0000"


def test_every_line_ends_in_crlf_and_fits_the_998_octet_limit() -> None:
    long_line = "x" * 3000 + " " + "слово" * 400
    raw, _ = compose(outgoing(text=long_line, html=f"<p>{long_line}</p>", subject="Тема " * 60))

    assert raw.endswith(b"\r\n")
    assert re.search(rb"(?<!\r)\n", raw) is None and re.search(rb"\r(?!\n)", raw) is None
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_line_breaks_in_a_subject_or_name_cannot_add_headers() -> None:
    msg = read(compose(outgoing(subject="Привет\r\nBcc: all@example.com", from_name="Ольга\nX-Evil: 1"))[0])

    assert msg["Bcc"] is None and msg["X-Evil"] is None
    assert msg["Subject"] == "Привет Bcc: all@example.com"


def test_an_idn_sending_domain_goes_out_in_its_xn_form() -> None:
    msg = read(compose(outgoing(from_address="news@пример.рф"))[0])

    assert msg["From"].addresses[0].domain == "xn--e1afmkfd.xn--p1ai"
    assert msg["Message-ID"] == f"<{MESSAGE_ID}@xn--e1afmkfd.xn--p1ai>"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"to_address": "иван@example.org"}, "to_address"),
        ({"to_address": "not an address"}, "to_address"),
        ({"from_address": "news@"}, "from_address"),
        ({"message_id": "<abc>"}, "message_id"),
        ({"feedback": Feedback("spring:sale", "2", "acme")}, "feedback.campaign"),
        ({"text": "broken \ud800 text"}, "text"),
    ],
)
def test_what_cannot_go_out_is_refused_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(Invalid) as caught:
        compose(outgoing(**changes))
    assert caught.value.field == field


def test_the_envelope_sender_carries_the_bounce_token() -> None:
    _, envelope = compose(outgoing())

    assert envelope == "bounce+GEZDGNBVGY3TQOJQGEZDGNBV@bounce.shop.example.com"
    assert parse_bounce_address(envelope) == "GEZDGNBVGY3TQOJQGEZDGNBV"
    assert parse_bounce_address(f"<{envelope}>", domain="bounce.shop.example.com") == "GEZDGNBVGY3TQOJQGEZDGNBV"


@pytest.mark.parametrize(
    "address",
    [
        "ivan@example.org",
        "bounce@bounce.shop.example.com",
        "bouncer+abc@bounce.shop.example.com",
        "bounce+a.b@bounce.shop.example.com",
        "bounce+abc@elsewhere.example.com",
        "bounce+abc",
    ],
)
def test_other_addresses_carry_no_bounce_token(address: str) -> None:
    assert parse_bounce_address(address, domain="bounce.shop.example.com") is None


@pytest.mark.parametrize("token", ["", "a+b", "a.b", "токен", "x" * 60])
def test_a_bounce_token_that_is_not_local_part_safe_is_refused(token: str) -> None:
    with pytest.raises(Invalid) as caught:
        bounce_address(token, "bounce.example.com")
    assert caught.value.field == "bounce_token"


def test_a_composed_message_signed_with_rsa_and_ed25519_verifies_end_to_end() -> None:
    rsa_key = new_key("rsa", "r2026", "shop.example.com")
    ed_key = new_key("ed25519", "e2026", "shop.example.com")
    raw, _ = compose(outgoing())
    signed = sign_all(raw, [Signer.for_key(rsa_key), Signer.for_key(ed_key)])
    records = {f"{k.dns_name}.".encode(): k.dns_value.encode() for k in (rsa_key, ed_key)}

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    checker = dkim.DKIM(signed)
    assert checker.verify(idx=0, dnsfunc=lookup) and checker.verify(idx=1, dnsfunc=lookup)
    h = set(re.sub(rb"\s", b"", checker.signature_fields[b"h"]).split(b":"))
    assert {b"from", b"subject", b"list-unsubscribe", b"list-unsubscribe-post", b"feedback-id"} <= h
    assert read(signed)["Subject"] == "Скидка 20% на всё до воскресенья — не пропустите, Иван!"
    assert not dkim.verify(signed.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", b""),
                           dnsfunc=lookup)
