"""The bounce/complaint classifier as a mail operator sees it: the labelled sample folder, mail
systems that are not in it (Office 365, Gmail, Exchange, Yahoo, Yandex/mail.ru in Russian), delays,
auto-replies, complaints, and the `nurture bounce-classify` command."""

from __future__ import annotations

import json
import subprocess
import sys
from email.message import EmailMessage
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pytest

from channels.email.bounces import Recipient, classify

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "bounces"


def crlf(text: str) -> bytes:
    return text.lstrip("\n").replace("\n", "\r\n").encode()


def fields(recipient: Recipient) -> dict[str, object]:
    return {
        "recipient": recipient.recipient, "status": recipient.status, "reply_code": recipient.reply_code,
        "reason": recipient.reason, "hard": recipient.hard, "action": recipient.action,
    }


OFFICE_365_NDR = crlf("""
From: Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@contoso.onmicrosoft.com>
To: <news@shop.example>
Subject: Undeliverable: Spring offer
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b1"

--b1
Content-Type: multipart/alternative; boundary="b2"

--b2
Content-Type: text/plain; charset="us-ascii"

Your message to Ghost.User@Contoso.com couldn't be delivered.
Ghost.User wasn't found at contoso.com.

Diagnostic information for administrators:
Generating server: DM6PR01MB1234.namprd01.prod.outlook.com

Ghost.User@Contoso.com
Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup'

--b2
Content-Type: text/html; charset="us-ascii"

<html><body><p>Your message to Ghost.User@Contoso.com couldn't be delivered.</p></body></html>
--b2--

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns;DM6PR01MB1234.namprd01.prod.outlook.com
Arrival-Date: Mon, 3 Jun 2024 10:00:01 +0000

Original-Recipient: rfc822;Ghost.User@Contoso.com
Final-Recipient: rfc822;Ghost.User@Contoso.com
Action: failed
Status: 5.1.10
Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient Ghost.User@Contoso.com
 not found by SMTP address lookup

--b1
Content-Type: message/rfc822

From: Shop <news@shop.example>
To: Ghost.User@Contoso.com
Subject: Spring offer

Hello!
--b1--
""")

GMAIL_DSN = crlf("""
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: news@shop.example
Subject: Delivery Status Notification (Failure)
MIME-Version: 1.0
Content-Type: multipart/report; boundary="g0"; report-type=delivery-status

--g0
Content-Type: multipart/alternative; boundary="g1"

--g1
Content-Type: text/plain; charset="UTF-8"

** Message blocked **

Your message to olga@example.org has been blocked. See technical details below for more information.
--g1--
--g0
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Arrival-Date: Tue, 04 Jun 2024 08:14:58 -0700 (PDT)

Final-Recipient: rfc822; olga@example.org
Action: failed
Status: 5.7.1
Remote-MTA: dns; gmail-smtp-in.l.google.com. (192.0.2.10)
Diagnostic-Code: smtp; 550-5.7.1 [203.0.113.5] Our system has detected that this message is
 550-5.7.1 likely unsolicited mail. To reduce the amount of spam sent to Gmail,
 550-5.7.1 this message has been blocked.
 550 5.7.1 https://support.google.com/mail/?p=UnsolicitedMessageError - gsmtp

--g0
Content-Type: text/rfc822-headers

From: Shop <news@shop.example>
To: olga@example.org
Subject: Summer offer
--g0--
""")

GMAIL_TEXT_BOUNCE = crlf("""
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: news@shop.example
Subject: Delivery Status Notification (Failure)
Content-Type: text/plain; charset=ISO-8859-1

Delivery to the following recipient failed permanently:

     Pavel@Example.net

Technical details of permanent failure:
Google tried to deliver your message, but it was rejected by the server for the recipient domain example.net.

The error that the other server returned was:
550 5.1.1 <pavel@example.net>: Recipient address rejected: User unknown in virtual mailbox table

----- Original message -----

To: pavel@example.net
Subject: Offer
""")

EXCHANGE_TEXT_NDR = crlf("""
From: postmaster@corp.example.com
To: news@shop.example
Subject: Undeliverable: Offer
Content-Type: text/plain; charset="us-ascii"

Delivery has failed to these recipients or groups:

petr@corp.example.com
The e-mail address you entered couldn't be found. Please check the recipient's e-mail address.

Diagnostic information for administrators:

Generating server: mail.corp.example.com

petr@corp.example.com
#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##

Original message headers:

From: news@shop.example
To: petr@corp.example.com
""")

YAHOO_TEXT_BOUNCE = crlf("""
From: MAILER-DAEMON@yahoo.com
To: news@shop.example
Subject: Failure Notice
Content-Type: text/plain

Sorry, we were unable to deliver your message to the following address.

<olga.k@yahoo.com>:
554: delivery error: dd This user doesn't have a yahoo.com account (olga.k@yahoo.com) [-5] - mta1123.mail.ne1.yahoo.com

--- Below this line is a copy of the message.

To: olga.k@yahoo.com
""")

# mail.ru and Yandex relays write the reason in Russian, in KOI8-R or UTF-8, and often give no code.
RUSSIAN_BOUNCE = (
    crlf("""
From: Mail Delivery System <MAILER-DAEMON@mx.example.ru>
To: news@shop.example
Subject: =?koi8-r?B?89/PwsnFzsnFIM7FIMTP09TB18zFzs8=?=
MIME-Version: 1.0
Content-Type: text/plain; charset=koi8-r
Content-Transfer-Encoding: 8bit

""")
    + """Это письмо создано автоматически почтовым сервером mx.example.ru.

Ваше сообщение не удалось доставить следующим получателям:

<Ivan.Petrov@example.ru>: почтовый ящик не существует
<anna@example.ru>: ящик переполнен
<oleg@example.ru>: домен не найден

----- Исходное сообщение -----
From: news@shop.example
To: Ivan.Petrov@example.ru, anna@example.ru, oleg@example.ru
Subject: Offer
""".replace("\n", "\r\n").encode("koi8-r")
)

YANDEX_DSN = crlf("""
From: mailer-daemon@yandex.ru
To: news@shop.example
Subject: =?utf-8?B?0J3QtdC00L7RgdGC0LDQstC70LXQvdC90L7QtSDRgdC+0L7QsdGJ0LXQvdC40LU=?=
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="y1"

--y1
Content-Type: text/plain; charset=utf-8

Сообщение не было доставлено.

<sergey@example.ru>: host mx.example.ru[192.0.2.30] said: 552 5.2.2 <sergey@example.ru>:
    Mailbox full (in reply to RCPT TO command)

--y1
Content-Type: message/delivery-status

Reporting-MTA: dns; forward101.mail.yandex.net

Final-Recipient: rfc822; sergey@example.ru
Action: failed
Status: 5.2.2
Diagnostic-Code: smtp; 552 5.2.2 <sergey@example.ru>: Mailbox full
--y1--
""")

DELAYED_DSN = crlf("""
From: MAILER-DAEMON@mail.shop.example (Mail Delivery System)
To: news@shop.example
Subject: Delayed Mail (still being retried)
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="d1"

--d1
Content-Type: text/plain

Your message could not be delivered for more than 4 hour(s).
It will be retried until it is 5 day(s) old.

<boris@example.com>: connect to mx.example.com[192.0.2.40]:25: Connection timed out

<vera@example.net>: host mx.example.net[192.0.2.41] said: 451 4.7.1
    Greylisted, please try again later (in reply to RCPT TO command)

--d1
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.shop.example

Final-Recipient: rfc822; boris@example.com
Action: delayed
Status: 4.4.1
Diagnostic-Code: X-Postfix; connect to mx.example.com[192.0.2.40]:25: Connection timed out
Will-Retry-Until: Mon, 10 Jun 2024 10:00:00 +0000

Final-Recipient: rfc822; vera@example.net
Action: delayed
Status: 4.7.1
Diagnostic-Code: smtp; 451 4.7.1 Greylisted, please try again later
--d1--
""")

OUT_OF_OFFICE = crlf("""
From: Olga Ivanova <Olga@Example.org>
To: news@shop.example
Subject: Automatic reply: Spring offer
Auto-Submitted: auto-replied
Content-Type: text/plain; charset=utf-8

I am out of the office until June 10.
""")

RUSSIAN_AUTO_REPLY = crlf("""
From: =?utf-8?B?0JjQstCw0L0=?= <ivan@example.ru>
To: news@shop.example
Subject: =?utf-8?B?0JDQstGC0L7QvtGC0LLQtdGCOiBTcHJpbmcgb2ZmZXI=?=
Content-Type: text/plain; charset=utf-8

Hello
""")


def test_sample_folder_agrees_with_the_labels_on_hard_and_status_for_95_percent_of_recipients() -> None:
    if not (SAMPLES / "labels.json").is_file():
        pytest.skip(f"the labelled bounce samples are not in {SAMPLES}")
    labels = json.loads((SAMPLES / "labels.json").read_text("utf-8"))
    agreed = {"hard": 0, "status": 0}
    total = 0
    for name, expected in labels.items():
        found = classify((SAMPLES / name).read_bytes()).recipients
        # The labels name no addresses: recipients pair up in report order; a missing one disagrees.
        for label, got in zip(expected, found, strict=False):
            agreed["hard"] += got.hard == label["hard"]
            agreed["status"] += got.status == label["status"]
        total += len(expected)
    assert agreed["hard"] / total >= 0.95, agreed
    assert agreed["status"] / total >= 0.95, agreed


def test_office_365_recipient_not_found_is_a_hard_bounce() -> None:
    report = classify(OFFICE_365_NDR)
    assert report.kind == "bounce"
    assert [fields(r) for r in report.recipients] == [{
        "recipient": "ghost.user@contoso.com", "status": "5.1.10", "reply_code": "550", "reason": "userunknown",
        "hard": True, "action": "failed",
    }]
    assert "RecipientNotFound" in report.recipients[0].diagnostic


def test_gmail_spam_block_keeps_its_status_and_is_not_hard() -> None:
    report = classify(GMAIL_DSN)
    assert report.kind == "bounce"
    (olga,) = report.recipients
    assert fields(olga) == {
        "recipient": "olga@example.org", "status": "5.7.1", "reply_code": "550", "reason": "spamdetected",
        "hard": False, "action": "failed",
    }
    # A multi-line reply reads as one sentence, its "550-5.7.1" said once.
    assert olga.diagnostic.startswith("550 5.7.1 [203.0.113.5] Our system has detected that this message is likely")
    assert "550-5.7.1" not in olga.diagnostic


@pytest.mark.parametrize(("raw", "expected"), [
    (GMAIL_TEXT_BOUNCE, ["pavel@example.net", "5.1.1", "550", "userunknown", True]),
    (EXCHANGE_TEXT_NDR, ["petr@corp.example.com", "5.1.1", "550", "userunknown", True]),
    (YAHOO_TEXT_BOUNCE, ["olga.k@yahoo.com", "5.0.911", "554", "userunknown", True]),
], ids=["gmail-text", "exchange-text", "yahoo-text"])
def test_bounces_written_only_for_people_name_the_failed_address_and_why(raw: bytes, expected: list[object]) -> None:
    report = classify(raw)
    assert report.kind == "bounce"
    assert [[r.recipient, r.status, r.reply_code, r.reason, r.hard] for r in report.recipients] == [expected]


def test_russian_bounce_without_codes_gets_sisimai_statuses_from_the_russian_reasons() -> None:
    report = classify(RUSSIAN_BOUNCE)
    assert report.kind == "bounce"
    assert [fields(r) for r in report.recipients] == [
        {"recipient": "ivan.petrov@example.ru", "status": "5.0.911", "reply_code": "", "reason": "userunknown",
         "hard": True, "action": "failed"},
        {"recipient": "anna@example.ru", "status": "5.0.922", "reply_code": "", "reason": "mailboxfull",
         "hard": False, "action": "failed"},
        {"recipient": "oleg@example.ru", "status": "5.0.912", "reply_code": "", "reason": "hostunknown",
         "hard": True, "action": "failed"},
    ]
    assert report.recipients[0].diagnostic == "почтовый ящик не существует"


def test_yandex_dsn_with_a_russian_notice_reads_the_status_fields() -> None:
    (sergey,) = classify(YANDEX_DSN).recipients
    assert fields(sergey) == {
        "recipient": "sergey@example.ru", "status": "5.2.2", "reply_code": "552", "reason": "mailboxfull",
        "hard": False, "action": "failed",
    }


def test_delayed_dsn_is_soft_and_keeps_the_4xx_status() -> None:
    report = classify(DELAYED_DSN)
    assert report.kind == "bounce"
    assert [fields(r) for r in report.recipients] == [
        {"recipient": "boris@example.com", "status": "4.4.1", "reply_code": "", "reason": "networkerror",
         "hard": False, "action": "delayed"},
        {"recipient": "vera@example.net", "status": "4.7.1", "reply_code": "451", "reason": "blocked",
         "hard": False, "action": "delayed"},
    ]


@pytest.mark.parametrize(("raw", "sender"), [
    (OUT_OF_OFFICE, "olga@example.org"), (RUSSIAN_AUTO_REPLY, "ivan@example.ru"),
], ids=["outlook", "russian-subject"])
def test_auto_reply_is_recognised_and_names_its_sender(raw: bytes, sender: str) -> None:
    report = classify(raw)
    assert report.kind == "auto_reply"
    assert [(r.recipient, r.reason, r.status, r.hard) for r in report.recipients] == [(sender, "vacation", "", False)]


def test_arf_complaint_built_with_the_email_package_names_the_complainant() -> None:
    original = EmailMessage()
    original["From"] = "Shop <news@shop.example>"
    original["To"] = "lead@example.com"
    original["Subject"] = "Offer"
    original.set_content("Hello")
    report = MIMEMultipart("report", report_type="feedback-report")
    report["From"] = "feedback@fbl.example.net"
    report["To"] = "abuse@shop.example"
    report["Subject"] = "FW: Offer"
    report.attach(MIMEText("This is an email abuse report for a message received from 192.0.2.1.", "plain"))
    feedback = MIMEBase("message", "feedback-report")
    feedback.set_payload(
        "Feedback-Type: abuse\nUser-Agent: ExampleFBL/1.0\nVersion: 1\n"
        "Original-Mail-From: <bounce@shop.example>\nOriginal-Rcpt-To: <Complainer@Example.com>\n"
        "Arrival-Date: Thu, 6 Jun 2024 10:00:00 +0000\nSource-IP: 192.0.2.1\n"
    )
    report.attach(feedback)
    report.attach(MIMEMessage(original))

    found = classify(report.as_bytes())

    assert found.kind == "complaint"
    assert [fields(r) for r in found.recipients] == [{
        "recipient": "complainer@example.com", "status": "", "reply_code": "", "reason": "feedback",
        "hard": False, "action": "",
    }]


def test_arf_complaint_without_rcpt_to_falls_back_to_the_original_to() -> None:
    original = EmailMessage()
    original["To"] = "Lead <Lead@Example.com>"
    original.set_content("Hello")
    report = MIMEMultipart("report", report_type="feedback-report")
    feedback = MIMEBase("message", "feedback-report")
    feedback.set_payload("Feedback-Type: abuse\nUser-Agent: ExampleFBL/1.0\nVersion: 1\n")
    report.attach(feedback)
    report.attach(MIMEMessage(original))
    assert [r.recipient for r in classify(report.as_bytes()).recipients] == ["lead@example.com"]


@pytest.mark.parametrize("raw", [
    b"",
    b"\xff\xfe\x00 not mail at all",
    crlf("From: Kim <kim@example.com>\nSubject: My parcel could not be delivered\n\nIt could not be delivered."),
], ids=["empty", "garbage", "person-writing-about-a-parcel"])
def test_what_is_not_a_report_has_kind_other_and_no_recipients(raw: bytes) -> None:
    report = classify(raw)
    assert (report.kind, report.recipients) == ("other", [])


def nurture(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=60,
    )


def test_bounce_classify_prints_a_json_line_per_recipient(tmp_path: Path) -> None:
    bounce, reply = tmp_path / "ru.eml", tmp_path / "ooo.eml"
    bounce.write_bytes(RUSSIAN_BOUNCE)
    reply.write_bytes(crlf("From: Kim <kim@example.com>\nSubject: lunch?\n\nSee you at noon."))

    done = nurture("bounce-classify", str(bounce), str(reply))

    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0] == {
        "file": str(bounce), "recipient": "ivan.petrov@example.ru", "status": "5.0.911", "reply_code": "",
        "reason": "userunknown", "hard": True,
    }
    assert [line["recipient"] for line in lines] == ["ivan.petrov@example.ru", "anna@example.ru", "oleg@example.ru"]


def test_bounce_classify_reports_an_unreadable_file_and_exits_1_after_the_others(tmp_path: Path) -> None:
    bounce = tmp_path / "o365.eml"
    bounce.write_bytes(OFFICE_365_NDR)
    missing = tmp_path / "missing.eml"

    done = nurture("bounce-classify", str(missing), str(bounce))

    assert done.returncode == 1
    assert str(missing) in done.stderr and "Traceback" not in done.stderr
    assert [json.loads(line)["recipient"] for line in done.stdout.splitlines()] == ["ghost.user@contoso.com"]
