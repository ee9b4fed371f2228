"""The public pages recipients reach from a message: the open pixel, the click redirect, the
unsubscribe and preferences page with its RFC 8058 one-click POST, and the double opt-in
confirmation. No API key; the signed token is the permission. A GET never changes anything a
person did not ask for (mail scanners fetch every link): unsubscribing and confirming are POSTs."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, select_autoescape

from channels import tracking
from channels.tokens import MessageTokens
from core.errors import Forbidden, NotFound, NurtureError
from core.settings import Settings
from core.web import SessionDep, SettingsDep, client_ip, read_body

router = APIRouter(tags=["tracking"], include_in_schema=True)

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"cache-control": "no-store, private", "x-robots-tag": "noindex"}
MAX_PAGE_POST = 16 * 1024

_WORDS = {
    "ru": {
        "title": "Настройки рассылки", "address": "Адрес", "all_off": "Вы отписаны от всех рассылок.",
        "topics": "Получать письма на темы:", "save": "Сохранить", "unsubscribe_all": "Отписаться от всего",
        "resubscribe": "Подписаться снова", "saved": "Сохранено.", "unknown": "Ссылка недействительна или устарела.",
        "confirm_title": "Подтверждение подписки", "confirm": "Подтвердить подписку",
        "confirmed": "Спасибо! Подписка подтверждена.", "already": "Подписка уже была подтверждена.",
        "confirm_ask": "Нажмите кнопку, чтобы подтвердить, что хотите получать наши письма.",
        "unsubscribe_ask": "Отписаться от всех рассылок можно одной кнопкой:",
    },
    "en": {
        "title": "Email preferences", "address": "Address", "all_off": "You are unsubscribed from all our emails.",
        "topics": "Send me emails about:", "save": "Save", "unsubscribe_all": "Unsubscribe from everything",
        "resubscribe": "Subscribe again", "saved": "Saved.", "unknown": "This link is not valid or has expired.",
        "confirm_title": "Confirm your subscription", "confirm": "Confirm my subscription",
        "confirmed": "Thank you! Your subscription is confirmed.",
        "already": "Your subscription was confirmed already.",
        "confirm_ask": "Press the button to confirm you want to receive our emails.",
        "unsubscribe_ask": "To stop all our emails, one button is enough:",
    },
}

_PAGE = Environment(autoescape=select_autoescape(default=True, default_for_string=True)).from_string("""<!doctype html>
<html lang="{{ locale }}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{{ w.title }}</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem;color:#1f2933}
button{font:inherit;padding:.5rem 1rem;margin:.25rem 0;border-radius:6px;border:1px solid #2563eb;background:#2563eb;
color:#fff;cursor:pointer}button.secondary{background:#fff;color:#2563eb}label{display:block;margin:.25rem 0}
.note{color:#047857}</style></head><body>
<h1>{{ heading or w.title }}</h1>
{% if note %}<p class="note" role="status">{{ note }}</p>{% endif %}
{% if message %}<p>{{ message }}</p>{% endif %}
{% if prefs %}
<p>{{ w.address }}: <strong>{{ prefs.address }}</strong></p>
{% if "" in prefs.unsubscribed %}
<p>{{ w.all_off }}</p>
<form method="post"><button name="action" value="resubscribe" class="secondary">{{ w.resubscribe }}</button></form>
{% else %}
{% if prefs.topics %}
<form method="post"><fieldset><legend>{{ w.topics }}</legend>
{% for topic in prefs.topics %}<label><input type="checkbox" name="topics" value="{{ topic }}"
{% if topic not in prefs.unsubscribed %}checked{% endif %}> {{ topic }}</label>{% endfor %}
</fieldset><button name="action" value="save" class="secondary">{{ w.save }}</button></form>
{% endif %}
<p>{{ w.unsubscribe_ask }}</p>
<form method="post"><button name="action" value="unsubscribe_all">{{ w.unsubscribe_all }}</button></form>
{% endif %}
{% endif %}
{% if confirm %}<form method="post"><button name="action" value="confirm">{{ w.confirm }}</button></form>{% endif %}
</body></html>""")


def _tokens(settings: Settings) -> MessageTokens:
    return MessageTokens(settings.signing_keys())


def _locale(request: Request, preferred: str | None = None) -> str:
    if preferred in _WORDS:
        return preferred  # type: ignore[return-value]
    accept = request.headers.get("accept-language", "").lower()
    return "en" if accept.startswith("en") else "ru"


def _page(locale: str, status: int = 200, **values: Any) -> HTMLResponse:
    html = _PAGE.render(locale=locale, w=_WORDS[locale], **values)
    return HTMLResponse(html, status_code=status, headers=NO_STORE)


def _visit(request: Request, settings: Settings) -> tracking.Visit:
    return tracking.Visit(request.headers.get("user-agent"), client_ip(request, settings), request.method)


@router.api_route("/t/o/{token}", methods=["GET", "HEAD"], include_in_schema=False)
async def open_pixel(token: str, request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """The open pixel: always the image (a broken image would show), the open recorded when the token is good."""
    try:
        await tracking.opened(session, _tokens(settings), token, _visit(request, settings))
        await session.commit()
    except (Forbidden, NotFound):
        pass
    return Response(PIXEL, media_type="image/gif", headers=NO_STORE)


@router.api_route("/t/c/{token}", methods=["GET", "HEAD"], include_in_schema=False)
async def click(token: str, request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """The click redirect: 302 to the link recorded when the message was rendered, never elsewhere."""
    try:
        url = await tracking.clicked(session, _tokens(settings), token, _visit(request, settings))
    except (Forbidden, NotFound) as exc:
        locale = _locale(request)
        return _page(locale, 404 if isinstance(exc, NotFound) else 403, message=_WORDS[locale]["unknown"])
    await session.commit()
    return RedirectResponse(url, status_code=302, headers=NO_STORE)


@router.get("/u/{token}", include_in_schema=False)
async def preferences_page(token: str, request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    try:
        prefs = await tracking.preferences(session, _tokens(settings), token)
    except (Forbidden, NotFound):
        locale = _locale(request)
        return _page(locale, 404, message=_WORDS[locale]["unknown"])
    return _page(_locale(request, prefs.locale), prefs=prefs)


@router.post("/u/{token}", include_in_schema=False)
async def unsubscribe(token: str, request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """RFC 8058 one-click (body `List-Unsubscribe=One-Click`, from the mail client) or the page's own form."""
    form = await _form(request)
    ip = client_ip(request, settings)
    tokens = _tokens(settings)
    purpose = settings.consent_purpose
    try:
        if form.get("List-Unsubscribe") == ["One-Click"]:
            await tracking.unsubscribe(session, tokens, token, None, "one-click", ip, purpose)
            await session.commit()
            return Response("unsubscribed\n", media_type="text/plain", headers=NO_STORE)
        action = (form.get("action") or ["unsubscribe_all"])[0]
        if action == "resubscribe":
            prefs = await tracking.resubscribe(session, tokens, token, ip, purpose)
        elif action == "save":
            current = await tracking.preferences(session, tokens, token)
            kept = set(form.get("topics") or [])
            stopped = [t for t in current.topics if t not in kept]
            await tracking.resubscribe_topics(session, current, kept)
            prefs = await tracking.unsubscribe(session, tokens, token, stopped, "preferences page", ip, purpose) \
                if stopped else await tracking.preferences(session, tokens, token)
        else:
            prefs = await tracking.unsubscribe(session, tokens, token, None, "preferences page", ip, purpose)
    except (Forbidden, NotFound):
        locale = _locale(request)
        return _page(locale, 404, message=_WORDS[locale]["unknown"])
    await session.commit()
    locale = _locale(request, prefs.locale)
    return _page(locale, prefs=prefs, note=_WORDS[locale]["saved"])


@router.get("/optin/{token}", include_in_schema=False)
async def optin_page(token: str, request: Request, settings: SettingsDep) -> Response:
    locale = _locale(request)
    try:
        _tokens(settings).read("optin", token)
    except Forbidden:
        return _page(locale, 404, message=_WORDS[locale]["unknown"])
    words = _WORDS[locale]
    return _page(locale, heading=words["confirm_title"], message=words["confirm_ask"], confirm=True)


@router.post("/optin/{token}", include_in_schema=False)
async def optin_confirm(token: str, request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    locale = _locale(request)
    words = _WORDS[locale]
    try:
        first = await tracking.confirm_optin(session, _tokens(settings), token, client_ip(request, settings))
    except (Forbidden, NotFound):
        return _page(locale, 404, message=words["unknown"])
    except NurtureError as exc:
        return _page(locale, exc.status, message=exc.message)
    await session.commit()
    return _page(locale, heading=words["confirm_title"], message=words["confirmed" if first else "already"])


async def _form(request: Request) -> dict[str, list[str]]:
    from urllib.parse import parse_qs

    body = await read_body(request, MAX_PAGE_POST)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "multipart/form-data":  # some mail clients send the one-click POST as multipart
        parsed = await request.form()
        return {k: [str(v) for v in parsed.getlist(k)] for k in parsed}
    return parse_qs(body.decode("utf-8", "replace"))
