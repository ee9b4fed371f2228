"""From a claimed ledger row to the signed bytes on the wire: render the template for the recipient
(links rewritten to signed /t/c/ redirects, an open pixel), compose the message (one-click
unsubscribe, Feedback-ID, VERP return path) and DKIM-sign it. Pure: the sender loads the template
and the recipient's context."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from channels.base import Delivery
from channels.email.compose import Feedback, OutgoingEmail, compose
from channels.email.dkim import Signer, sign_all
from channels.templates import EmailTemplate, compile_email
from channels.tokens import MessageTokens

_FEEDBACK_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
PIXEL = '<img src="{url}" width="1" height="1" alt="" style="display:block;height:1px;width:1px;border:0" />'


@dataclass(frozen=True)
class Mailer:
    """Who mail is from and how it is signed; one per sender process."""

    from_address: str
    from_name: str
    bounce_domain: str
    base_url: str  # https://… of this install: tracking and unsubscribe links
    tokens: MessageTokens
    signers: Sequence[Signer] = ()
    feedback_sender: str = "nurture"

    def links(self, message_id: uuid.UUID) -> dict[str, str]:
        """The message's own URLs a template may use (unsubscribe_url, preferences_url)."""
        page = f"{self.base_url}/u/{self.tokens.make('unsubscribe', message_id)}"
        return {"unsubscribe_url": page, "preferences_url": page + "?preferences=1"}


@dataclass(frozen=True)
class Prepared:
    delivery: Delivery
    links: list[str]  # the trackable links as rendered: /t/c/{token} of link n redirects to links[n]
    subject: str


def prepare(mailer: Mailer, row: Any, template: EmailTemplate, context: Mapping[str, Any]) -> Prepared:
    """The message for one ledger row; raises RenderError / Invalid when it cannot be made."""
    message_id: uuid.UUID = row.id
    own = (f"{mailer.base_url}/u/", f"{mailer.base_url}/t/", f"{mailer.base_url}/optin/")
    links: list[str] = []

    def track(url: str, _tag: str | None) -> str:
        if url.startswith(own):
            return url
        links.append(url)
        return f"{mailer.base_url}/t/c/{mailer.tokens.make('click', message_id, len(links) - 1)}"

    urls = mailer.links(message_id)
    rendered = compile_email(template).render({**context, **urls}, track)
    pixel = PIXEL.format(url=f"{mailer.base_url}/t/o/{mailer.tokens.make('open', message_id)}")
    html = rendered.html
    html = html.replace("</body>", pixel + "</body>", 1) if "</body>" in html else html + pixel
    marketing = row.kind == "marketing"
    raw, envelope = compose(OutgoingEmail(
        message_id=str(message_id), from_address=mailer.from_address, from_name=mailer.from_name,
        to_address=row.recipient, to_name=_name(context), subject=rendered.subject, text=rendered.text, html=html,
        bounce_token=mailer.tokens.make("bounce", message_id), bounce_domain=mailer.bounce_domain,
        marketing=marketing, unsubscribe_url=urls["unsubscribe_url"] if marketing else None,
        feedback=Feedback(_feedback(row.campaign, "direct"), _feedback(row.step, "0"), mailer.feedback_sender),
    ))
    if mailer.signers:
        raw = sign_all(raw, mailer.signers)
    delivery = Delivery(message_id=message_id, recipient=row.recipient, kind=row.kind, subject=rendered.subject,
                        raw=raw, envelope_from=envelope)
    return Prepared(delivery, links, rendered.subject)


def _name(context: Mapping[str, Any]) -> str:
    lead = context.get("lead") or {}
    return " ".join(str(lead.get(k) or "") for k in ("first_name", "last_name")).strip()


def _feedback(value: str | None, default: str) -> str:
    cleaned = _FEEDBACK_UNSAFE.sub("-", value or "").strip("-")[:200]
    return cleaned or default
