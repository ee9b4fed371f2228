"""Telegram: the sendMessage request the Bot API receives, what each answer comes to, and the bot
token kept out of everything recorded or logged. Outside HTTP is httpx's MockTransport."""

from __future__ import annotations

import json
import logging
import uuid

import httpx
import pytest

from channels.base import Delivery
from channels.http import BLOCKED
from channels.ledger import DEFERRED, FAILED, SENT, UNKNOWN
from channels.messenger import TelegramChannel
from core.errors import Invalid
from tests.fakes import Answer, Remote

TOKEN = "7071234567:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
SEND_URL = f"https://api.telegram.org/bot{TOKEN}/sendMessage"
CHAT = "123456789"
MESSAGE_ID = uuid.UUID("0192f0c4-7d4e-7000-8000-000000000002")



def bot(answer: Answer, parse_mode: str | None = None) -> tuple[TelegramChannel, Remote]:
    api = Remote(answer)
    return TelegramChannel(TOKEN, transport=api.transport, parse_mode=parse_mode), api


def message(text: str = "Your webinar starts at 18:00", chat: str = CHAT) -> Delivery:
    return Delivery(message_id=MESSAGE_ID, recipient=chat, text=text)


def refused(status: int, description: str, **parameters: int) -> httpx.Response:
    body: dict[str, object] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return httpx.Response(status, json=body)


SENT_REPLY = httpx.Response(200, json={"ok": True, "result": {
    "message_id": 4242, "date": 1772443800, "chat": {"id": 123456789, "type": "private"}, "text": "…"}})


async def test_the_bot_api_receives_send_message_with_the_chat_id_and_text() -> None:
    channel, api = bot(SENT_REPLY)

    outcome = await channel.deliver(message())

    assert (outcome.state, outcome.provider_id) == (SENT, "4242")
    [request] = api.requests
    assert (request.method, str(request.url)) == ("POST", SEND_URL)
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"chat_id": 123456789, "text": "Your webinar starts at 18:00",
                                           "disable_web_page_preview": True}


async def test_a_parse_mode_and_a_channel_username_go_as_given() -> None:
    channel, api = bot(SENT_REPLY, parse_mode="HTML")

    await channel.deliver(message("<b>Today</b> at 18:00", chat="@nurture_news"))

    assert json.loads(api.requests[0].content) == {"chat_id": "@nurture_news", "text": "<b>Today</b> at 18:00",
                                                   "disable_web_page_preview": True, "parse_mode": "HTML"}


async def test_a_group_chat_id_is_negative() -> None:
    channel, api = bot(SENT_REPLY)

    await channel.deliver(message(chat="-1001234567890"))

    assert json.loads(api.requests[0].content)["chat_id"] == -1001234567890


async def test_429_is_deferred_for_telegrams_retry_after() -> None:
    channel, _ = bot(refused(429, "Too Many Requests: retry after 35", retry_after=35))

    outcome = await channel.deliver(message())

    assert (outcome.state, outcome.retry_after) == (DEFERRED, 35.0)


@pytest.mark.parametrize("description", [
    "Forbidden: bot was blocked by the user",
    "Forbidden: bot was kicked from the group chat",
    "Forbidden: user is deactivated",
])
async def test_403_fails_flagged_as_blocked_so_the_chat_can_be_suppressed(description: str) -> None:
    channel, _ = bot(refused(403, description))

    outcome = await channel.deliver(message())

    assert outcome.state == FAILED
    assert outcome.reason is not None and outcome.reason.startswith(BLOCKED)
    assert description.removeprefix("Forbidden: ") in outcome.reason


async def test_a_user_who_blocked_the_bot_reads_blocked_by_the_user() -> None:
    channel, _ = bot(refused(403, "Forbidden: bot was blocked by the user"))

    outcome = await channel.deliver(message())

    assert outcome.reason == "blocked: bot was blocked by the user"


async def test_chat_not_found_fails() -> None:
    channel, _ = bot(refused(400, "Bad Request: chat not found"))

    outcome = await channel.deliver(message())

    assert (outcome.state, outcome.reason) == (FAILED, "chat not found")


async def test_a_group_that_became_a_supergroup_fails_naming_its_new_chat_id() -> None:
    channel, _ = bot(refused(400, "Bad Request: group chat was upgraded to a supergroup chat",
                             migrate_to_chat_id=-1009876543210))

    outcome = await channel.deliver(message())

    assert outcome.state == FAILED
    assert outcome.reason is not None and "-1009876543210" in outcome.reason


@pytest.mark.parametrize(("answer", "state"), [
    (refused(500, "Internal Server Error"), UNKNOWN),
    (httpx.Response(502, text="<html>502 Bad Gateway</html>"), UNKNOWN),
    (httpx.Response(503, headers={"Retry-After": "20"}), DEFERRED),
    (refused(401, "Unauthorized"), FAILED),
    (httpx.Response(200, text="<html>captive portal</html>"), UNKNOWN),  # 200 without ok: true
])
async def test_other_answers_follow_the_channel_rules(answer: httpx.Response, state: str) -> None:
    channel, _ = bot(answer)

    assert (await channel.deliver(message())).state == state


@pytest.mark.parametrize(("error", "state"), [
    (httpx.ConnectTimeout, DEFERRED),
    (httpx.ConnectError, DEFERRED),
    (httpx.ReadTimeout, UNKNOWN),
    (httpx.RemoteProtocolError, UNKNOWN),
])
async def test_no_answer_is_deferred_only_when_the_request_never_left(error: type[httpx.TransportError],
                                                                    state: str) -> None:
    channel, _ = bot(error)

    outcome = await channel.deliver(message())

    assert outcome.state == state
    assert outcome.response is not None and "no answer from https://api.telegram.org/bot" in outcome.response
    assert TOKEN not in outcome.response


async def test_an_answer_echoing_the_url_is_recorded_without_the_token() -> None:
    channel, _ = bot(lambda request: httpx.Response(502, text=f"upstream failed for {request.url.path}"))

    outcome = await channel.deliver(message())

    assert outcome.response is not None and "upstream failed for /bot" in outcome.response
    assert TOKEN not in outcome.response and TOKEN.split(":")[1] not in outcome.response


async def test_httpx_request_logs_carry_no_token(caplog: pytest.LogCaptureFixture) -> None:
    channel, _ = bot(SENT_REPLY)

    with caplog.at_level(logging.INFO, logger="httpx"):
        await channel.deliver(message())

    assert "/sendMessage" in caplog.text  # httpx did log the request
    assert TOKEN not in caplog.text and TOKEN.split(":")[1] not in caplog.text


async def test_a_text_over_4096_characters_fails_before_any_request() -> None:
    channel, api = bot(SENT_REPLY)

    too_long = await channel.deliver(message("я" * 4097))
    at_limit = await channel.deliver(message("я" * 4096))

    assert too_long.state == FAILED
    assert too_long.reason == "the text is 4097 characters; Telegram takes at most 4096"
    assert at_limit.state == SENT
    assert len(api.requests) == 1


@pytest.mark.parametrize(("chat", "text"), [("anna", "Hi"), ("12ab", "Hi"), ("", "Hi"), (CHAT, " \n")])
async def test_a_bad_chat_id_or_an_empty_text_fails_before_any_request(chat: str, text: str) -> None:
    channel, api = bot(SENT_REPLY)

    outcome = await channel.deliver(message(text, chat=chat))

    assert outcome.state == FAILED
    assert api.requests == []


async def test_the_channel_sends_with_connect_5_s_and_read_15_s_timeouts_and_closes_its_client() -> None:
    channel, api = bot(SENT_REPLY)

    await channel.deliver(message())
    timeout = api.requests[0].extensions["timeout"]
    await channel.close()

    assert (timeout["connect"], timeout["read"]) == (5.0, 15.0)
    assert channel._client.is_closed


async def test_a_client_given_to_the_channel_is_left_open_for_its_owner() -> None:
    async with httpx.AsyncClient(transport=Remote(SENT_REPLY).transport) as client:
        channel = TelegramChannel(TOKEN, client=client)
        assert (await channel.deliver(message())).state == SENT
        await channel.close()
        assert not client.is_closed


@pytest.mark.parametrize("token", ["", "not-a-token", "123:abc/../x", "123:abc def"])
def test_a_malformed_token_is_invalid_without_repeating_it(token: str) -> None:
    with pytest.raises(Invalid) as raised:
        TelegramChannel(token)

    assert raised.value.field == "bot_token"
    assert not token or token not in raised.value.message
