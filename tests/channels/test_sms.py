"""SMS: what Twilio and a configured gateway receive, what each answer comes to, receipts, Twilio's
request signature, and the STOP/START replies. Outside HTTP is httpx's MockTransport."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from urllib.parse import parse_qsl

import httpx
import pytest

from channels.base import Delivery
from channels.http import BLOCKED
from channels.ledger import DEFERRED, FAILED, SENT, UNKNOWN
from channels.sms.channel import SmsChannel
from channels.sms.generic import GenericSmsConfig, GenericSmsProvider
from channels.sms.keywords import is_start, is_stop
from channels.sms.provider import parse_receipt
from channels.sms.receipts import DELIVERED, PENDING, UNDELIVERED
from channels.sms.setup import provider_from_config
from channels.sms.twilio import TwilioSms, verify_twilio_signature
from core.errors import Invalid
from tests.fakes import Answer, Remote

SID, TOKEN = "AC0123456789abcdef0123456789abcdef", "twilio-auth-token-secret"
TWILIO_URL = f"https://api.twilio.com/2010-04-01/Accounts/{SID}/Messages.json"
ANNA = "+79161234567"
MESSAGE_ID = uuid.UUID("0192f0c4-7d4e-7000-8000-000000000001")

class Gateway(Remote):
    """The SMS provider's side (tests.fakes.Remote), reading back the form a request posted."""

    def form(self, index: int = 0) -> dict[str, str]:
        return dict(parse_qsl(self.requests[index].content.decode()))


def twilio(answer: Answer, *, status_callback: str | None = None,
           messaging_service_sid: str | None = None) -> tuple[SmsChannel, Gateway]:
    gateway = Gateway(answer)
    provider = TwilioSms(SID, TOKEN, sender=None if messaging_service_sid else "+15005550006",
                         messaging_service_sid=messaging_service_sid, status_callback=status_callback,
                         transport=gateway.transport)
    return SmsChannel(provider), gateway


def text(body: str = "Your webinar starts at 18:00", to: str = ANNA) -> Delivery:
    return Delivery(message_id=MESSAGE_ID, recipient=to, text=body)


def twilio_error(status: int, code: int, message: str, **headers: str) -> httpx.Response:
    body = {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status}
    return httpx.Response(status, json=body, headers=headers)


QUEUED = httpx.Response(201, json={"sid": "SM1f0e8ae6ade43cb3c0ce4525424e404f", "status": "queued"})


# --- Twilio: the request, and what each answer comes to ------------------------------------------

async def test_twilio_receives_a_form_post_with_basic_auth_and_the_sid_is_the_provider_id() -> None:
    channel, gateway = twilio(QUEUED, status_callback="https://app.example/sms/receipts/twilio")

    outcome = await channel.deliver(text())

    assert outcome.state == SENT
    assert outcome.provider_id == "SM1f0e8ae6ade43cb3c0ce4525424e404f"
    [request] = gateway.requests
    assert request.method == "POST"
    assert str(request.url) == TWILIO_URL
    assert request.headers["authorization"] == "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert gateway.form() == {"To": ANNA, "From": "+15005550006", "Body": "Your webinar starts at 18:00",
                              "StatusCallback": "https://app.example/sms/receipts/twilio"}


async def test_twilio_with_a_messaging_service_sends_its_sid_instead_of_a_from_number() -> None:
    channel, gateway = twilio(QUEUED, messaging_service_sid="MG0123456789abcdef0123456789abcdef")

    assert (await channel.deliver(text())).state == SENT
    assert gateway.form() == {"To": ANNA, "MessagingServiceSid": "MG0123456789abcdef0123456789abcdef",
                              "Body": "Your webinar starts at 18:00"}


async def test_twilio_invalid_number_21211_fails_with_twilios_words() -> None:
    channel, _ = twilio(twilio_error(400, 21211, "The 'To' number +79161234567 is not a valid phone number."))

    outcome = await channel.deliver(text())

    assert outcome.state == FAILED
    assert outcome.reason is not None and "21211" in outcome.reason and "not a valid phone number" in outcome.reason
    assert outcome.response is not None and outcome.response.startswith("400 Bad Request")


async def test_twilio_unsubscribed_recipient_21610_fails_flagged_as_blocked() -> None:
    channel, _ = twilio(twilio_error(400, 21610, "Attempt to send to unsubscribed recipient"))

    outcome = await channel.deliver(text())

    assert outcome.state == FAILED
    assert outcome.reason is not None and outcome.reason.startswith(BLOCKED)
    assert "21610" in outcome.reason


async def test_twilio_429_is_deferred_for_as_long_as_retry_after_says() -> None:
    channel, _ = twilio(twilio_error(429, 20429, "Too Many Requests", **{"Retry-After": "30"}))

    outcome = await channel.deliver(text())

    assert (outcome.state, outcome.retry_after) == (DEFERRED, 30.0)


async def test_twilio_429_without_retry_after_is_deferred_to_the_ledgers_backoff() -> None:
    channel, _ = twilio(twilio_error(429, 20429, "Too Many Requests"))

    outcome = await channel.deliver(text())

    assert (outcome.state, outcome.retry_after) == (DEFERRED, None)


async def test_a_503_with_an_http_date_retry_after_is_deferred_until_then(frozen_now: datetime) -> None:
    channel, _ = twilio(httpx.Response(503, headers={"Retry-After": "Mon, 02 Mar 2026 09:32:00 GMT"}))

    outcome = await channel.deliver(text())

    assert (outcome.state, outcome.retry_after) == (DEFERRED, 120.0)


@pytest.mark.parametrize("answer", [
    twilio_error(500, 20500, "Internal Server Error"),
    httpx.Response(502, text="<html>Bad Gateway</html>"),
    httpx.Response(503),  # says nothing about when: may have been taken
])
async def test_twilio_5xx_is_unknown_because_the_message_may_have_been_created(answer: httpx.Response) -> None:
    channel, _ = twilio(answer)

    outcome = await channel.deliver(text())

    assert outcome.state == UNKNOWN
    assert outcome.retry_after is None


async def test_twilio_refusing_the_credentials_fails() -> None:
    channel, _ = twilio(twilio_error(401, 20003, "Authenticate"))

    outcome = await channel.deliver(text())

    assert outcome.state == FAILED and outcome.reason is not None and "20003" in outcome.reason


@pytest.mark.parametrize(("error", "state"), [
    (httpx.ConnectTimeout, DEFERRED),
    (httpx.ConnectError, DEFERRED),
    (httpx.PoolTimeout, DEFERRED),
    (httpx.ReadTimeout, UNKNOWN),
    (httpx.WriteTimeout, UNKNOWN),
    (httpx.ReadError, UNKNOWN),
    (httpx.RemoteProtocolError, UNKNOWN),  # "server disconnected without sending a response"
])
async def test_no_answer_is_deferred_only_when_the_request_never_left(error: type[httpx.TransportError],
                                                                    state: str) -> None:
    channel, gateway = twilio(error)

    outcome = await channel.deliver(text())

    assert outcome.state == state
    assert len(gateway.requests) == 1
    assert outcome.response is not None and error.__name__ in outcome.response


async def test_twilio_is_called_with_connect_5_s_and_read_15_s_timeouts_and_its_own_client_closes() -> None:
    gateway = Gateway(QUEUED)
    provider = TwilioSms(SID, TOKEN, sender="+15005550006", transport=gateway.transport)

    await SmsChannel(provider).deliver(text())
    timeout = gateway.requests[0].extensions["timeout"]
    await provider.close()

    assert (timeout["connect"], timeout["read"]) == (5.0, 15.0)
    assert provider._client.is_closed


async def test_a_client_given_to_the_provider_is_left_open_for_its_owner() -> None:
    async with httpx.AsyncClient(transport=Gateway(QUEUED).transport) as client:
        channel = SmsChannel(TwilioSms(SID, TOKEN, sender="+15005550006", client=client))
        assert (await channel.deliver(text())).state == SENT
        await channel.close()
        assert not client.is_closed


@pytest.mark.parametrize("config", [
    {"account_sid": "", "auth_token": TOKEN, "sender": "+15005550006"},
    {"account_sid": "AC1/../x", "auth_token": TOKEN, "sender": "+15005550006"},
    {"account_sid": SID, "auth_token": "", "sender": "+15005550006"},
    {"account_sid": SID, "auth_token": TOKEN},
    {"account_sid": SID, "auth_token": TOKEN, "sender": "+1", "messaging_service_sid": "MG1"},
    {"account_sid": SID, "auth_token": TOKEN, "sender": "+1", "status_callback": "ftp://x"},
])
def test_a_twilio_config_missing_or_contradicting_itself_is_invalid(config: dict[str, str]) -> None:
    with pytest.raises(Invalid):
        provider_from_config({"type": "twilio", **config})


async def test_the_settings_json_with_type_twilio_makes_a_twilio_provider() -> None:
    provider = provider_from_config({"type": "twilio", "account_sid": SID, "auth_token": TOKEN,
                                     "sender": "+15005550006"})

    assert isinstance(provider, TwilioSms)
    assert provider.url == TWILIO_URL
    await provider.close()


# --- The sms channel: which numbers it texts ----------------------------------------------------------

@pytest.mark.parametrize("recipient", ["89161234567", "+7 916 123-45-67", "+70000000000", "anna@example.ru", ""])
async def test_a_recipient_that_is_not_a_valid_e164_number_fails_without_a_request(recipient: str) -> None:
    channel, gateway = twilio(QUEUED)

    outcome = await channel.deliver(text(to=recipient))

    assert outcome.state == FAILED
    assert outcome.reason is not None and "phone number" in outcome.reason
    assert gateway.requests == []


async def test_an_empty_text_fails_without_a_request() -> None:
    channel, gateway = twilio(QUEUED)

    outcome = await channel.deliver(text(body="  \n"))

    assert outcome.state == FAILED and outcome.reason == "nothing to send: the text is empty"
    assert gateway.requests == []


# --- A gateway configured by JSON ---------------------------------------------------------------------

GATEWAY = {
    "url": "https://sms.example.ru/api/v2/send",
    "encoding": "json",
    "body": {"phone": "{to}", "msg": "{text}", "from": "{sender}", "ref": "nurture-{message_id}",
             "options": {"translit": False, "tags": ["nurture"]}},
    "headers": {"Authorization": "Bearer gw-api-key-123456"},
    "sender": "Nurture",
    "id_field": "data.id",
}


def gateway_channel(answer: Answer, **changes: object) -> tuple[SmsChannel, Gateway]:
    gateway = Gateway(answer)
    provider = GenericSmsProvider.from_dict(json.loads(json.dumps({**GATEWAY, **changes})), transport=gateway.transport)
    return SmsChannel(provider), gateway


async def test_the_gateway_receives_the_configured_json_body_and_headers() -> None:
    channel, gateway = gateway_channel(httpx.Response(200, json={"data": {"id": 987654}, "status": "ok"}))

    outcome = await channel.deliver(text(body="Hi {name}, see you at 18:00"))

    assert (outcome.state, outcome.provider_id) == (SENT, "987654")
    [request] = gateway.requests
    assert (request.method, str(request.url)) == ("POST", "https://sms.example.ru/api/v2/send")
    assert request.headers["authorization"] == "Bearer gw-api-key-123456"
    assert json.loads(request.content) == {
        "phone": ANNA, "msg": "Hi {name}, see you at 18:00", "from": "Nurture", "ref": f"nurture-{MESSAGE_ID}",
        "options": {"translit": False, "tags": ["nurture"]},
    }


async def test_a_form_encoded_gateway_receives_form_fields() -> None:
    channel, gateway = gateway_channel(httpx.Response(200, json={"messages": [{"id": "m-1"}]}), encoding="form",
                                       method="put", id_field="messages.0.id",
                                       body={"to": "{to}", "text": "{text}", "flash": 0})

    outcome = await channel.deliver(text())

    assert (outcome.state, outcome.provider_id) == (SENT, "m-1")
    assert gateway.requests[0].method == "PUT"
    assert gateway.form() == {"to": ANNA, "text": "Your webinar starts at 18:00", "flash": "0"}


async def test_a_2xx_without_the_id_is_still_sent() -> None:
    channel, _ = gateway_channel(httpx.Response(200, text="OK"))

    outcome = await channel.deliver(text())

    assert (outcome.state, outcome.provider_id) == (SENT, None)


@pytest.mark.parametrize(("answer", "state", "retry_after"), [
    (httpx.Response(400, json={"error": "bad phone"}), FAILED, None),
    (httpx.Response(408), DEFERRED, None),
    (httpx.Response(429, headers={"Retry-After": "12"}), DEFERRED, 12.0),
    (httpx.Response(503, headers={"Retry-After": "60"}), DEFERRED, 60.0),
    (httpx.Response(500), UNKNOWN, None),
    (httpx.Response(301, headers={"Location": "https://elsewhere.example"}), FAILED, None),
])
async def test_the_gateways_answers_map_to_outcomes(answer: httpx.Response, state: str,
                                                    retry_after: float | None) -> None:
    channel, _ = gateway_channel(answer)

    outcome = await channel.deliver(text())

    assert (outcome.state, outcome.retry_after) == (state, retry_after)


async def test_a_gateway_documented_to_send_nothing_on_5xx_is_deferred_instead() -> None:
    channel, _ = gateway_channel(httpx.Response(500), retry_server_errors=True)

    assert (await channel.deliver(text())).state == DEFERRED


async def test_the_gateways_api_key_never_reaches_the_recorded_answer() -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, text=f"invalid key: {request.headers['authorization']} for {request.url}")

    channel, _ = gateway_channel(echo, url="https://sms.example.ru/send?api_key=k-777-secret")

    outcome = await channel.deliver(text())

    assert outcome.state == FAILED
    assert outcome.response is not None and "invalid key" in outcome.response
    assert "gw-api-key-123456" not in outcome.response and "k-777-secret" not in outcome.response


@pytest.mark.parametrize(("changes", "field"), [
    ({"url": "sms.example.ru/send"}, "url"),
    ({"url": None}, "url"),
    ({"encoding": "xml"}, "encoding"),
    ({"method": "DELETE"}, "method"),
    ({"body": {"phone": "{to}", "msg": "{txt}"}}, "body.msg"),
    ({"body": {"phone": "{to}", "msg": "{text!r}"}}, "body.msg"),
    ({"body": {"phone": "{to}", "msg": "{text"}}, "body.msg"),
    ({"body": {"phone": "{to}"}}, "body"),
    ({"sender": ""}, "sender"),
    ({"encoding": "form"}, "body.options"),
    ({"headers": {"X-Key": 5}}, "headers.X-Key"),
    ({"id_fild": "id"}, "id_fild"),
    ({"receipt": {"statuses": {"DELIVRD": "ok"}}}, "receipt.statuses"),
])
def test_a_bad_gateway_config_is_invalid_naming_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(Invalid) as raised:
        GenericSmsConfig.from_dict({**GATEWAY, **changes})

    assert raised.value.field == field


async def test_the_settings_json_without_a_type_is_a_generic_gateway() -> None:
    provider = provider_from_config({**GATEWAY, "type": "http"})

    assert isinstance(provider, GenericSmsProvider)
    assert provider.config.url == GATEWAY["url"]
    await provider.close()


# --- Receipts -----------------------------------------------------------------------------------------

@pytest.fixture
async def twilio_provider() -> AsyncIterator[TwilioSms]:
    provider = TwilioSms(SID, TOKEN, sender="+15005550006")
    yield provider
    await provider.close()


@pytest.fixture
async def gateway_provider() -> AsyncIterator[GenericSmsProvider]:
    provider = GenericSmsProvider.from_dict(GATEWAY)
    yield provider
    await provider.close()


@pytest.mark.parametrize(("status", "state"), [
    ("queued", PENDING), ("sent", PENDING), ("delivered", DELIVERED), ("undelivered", UNDELIVERED),
    ("failed", UNDELIVERED),
])
def test_twilio_status_callbacks_become_receipts(twilio_provider: TwilioSms, status: str, state: str) -> None:
    receipt = parse_receipt(twilio_provider, {"MessageSid": "SM1f0e", "MessageStatus": status, "AccountSid": SID})

    assert (receipt.provider_id, receipt.state, receipt.error) == ("SM1f0e", state, None)


def test_an_undelivered_twilio_receipt_says_what_the_error_code_means(twilio_provider: TwilioSms) -> None:
    receipt = parse_receipt(twilio_provider, {"MessageSid": "SM1f0e", "MessageStatus": "undelivered",
                                             "ErrorCode": "30003"})

    assert receipt.error == "30003 unreachable destination handset"


@pytest.mark.parametrize("fields", [{"MessageStatus": "delivered"}, {"MessageSid": "SM1", "MessageStatus": "received"}])
def test_a_twilio_callback_without_a_sid_or_with_an_inbound_status_is_invalid(twilio_provider: TwilioSms,
                                                                              fields: dict[str, str]) -> None:
    with pytest.raises(Invalid):
        parse_receipt(twilio_provider, fields)


def test_a_gateway_receipt_with_the_default_field_names_and_smpp_status_words(
        gateway_provider: GenericSmsProvider) -> None:
    provider = gateway_provider

    assert parse_receipt(provider, {"id": "987654", "status": "DELIVRD"}).state == DELIVERED
    undelivered = parse_receipt(provider, {"id": 987654, "status": "UNDELIV", "error": "005"})
    assert (undelivered.provider_id, undelivered.state, undelivered.error) == ("987654", UNDELIVERED, "005")


async def test_a_gateway_receipt_read_by_configured_paths_and_status_words() -> None:
    receipt_config = {"id_field": "data.msg_id", "status_field": "data.state", "error_field": "data.why",
                      "statuses": {"OK": "delivered", "NOK": "undelivered"}}
    provider = GenericSmsProvider.from_dict({**GATEWAY, "receipt": receipt_config})

    receipt = parse_receipt(provider, {"data": {"msg_id": "m-9", "state": "nok", "why": "absent subscriber"}})

    assert (receipt.provider_id, receipt.state, receipt.error) == ("m-9", UNDELIVERED, "absent subscriber")
    with pytest.raises(Invalid):
        parse_receipt(provider, {"data": {"msg_id": "m-9", "state": "maybe"}})
    await provider.close()


# --- Twilio's request signature -----------------------------------------------------------------------

# The example of Twilio's security docs and of its own libraries' tests: auth token 12345.
DOCS_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOCS_PARAMS = {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309", "To": "+18005551212",
               "Caller": "+14158675309"}
DOCS_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_twilios_documented_example_signature_verifies() -> None:
    assert verify_twilio_signature("12345", DOCS_URL, DOCS_PARAMS, DOCS_SIGNATURE)


def test_repeated_form_fields_are_signed_in_sorted_order() -> None:
    pairs = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]

    assert verify_twilio_signature("12345", DOCS_URL, pairs, "IK+Dwps556ElfBT0I3Rgjkr1wJU=")


def test_a_signature_made_with_or_without_the_default_port_verifies() -> None:
    assert verify_twilio_signature("12345", DOCS_URL, DOCS_PARAMS, "kvajT1Ptam85bY51eRf/AJRuM3w=")  # with :443
    assert verify_twilio_signature("12345", DOCS_URL.replace(".com", ".com:1234"), DOCS_PARAMS, DOCS_SIGNATURE)


@pytest.mark.parametrize(("token", "url", "params", "signature"), [
    ("54321", DOCS_URL, DOCS_PARAMS, DOCS_SIGNATURE),
    ("12345", DOCS_URL.replace("foo=1", "foo=2"), DOCS_PARAMS, DOCS_SIGNATURE),
    ("12345", DOCS_URL, {**DOCS_PARAMS, "Digits": "1235"}, DOCS_SIGNATURE),
    ("12345", DOCS_URL, {**DOCS_PARAMS, "Body": "STOP"}, DOCS_SIGNATURE),
    ("12345", DOCS_URL, DOCS_PARAMS, ""),
    ("12345", DOCS_URL, DOCS_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8=\u00e9"),
    ("", DOCS_URL, DOCS_PARAMS, DOCS_SIGNATURE),
])
def test_a_request_changed_in_any_part_does_not_verify(token: str, url: str, params: dict[str, str],
                                                       signature: str) -> None:
    assert not verify_twilio_signature(token, url, params, signature)


# --- What recipients reply ----------------------------------------------------------------------------

@pytest.mark.parametrize("reply", [
    "STOP", "stop", " Stop! ", "STOPALL", "stop all", "Unsubscribe", "CANCEL", "end", "Quit.", "\tSTOP\n",
    "СТОП", "стоп", "Стоп!!!", "ОТПИСАТЬСЯ", "отписка", "Отпишите", "CTOП",
])
def test_stop_words_in_english_and_russian_are_recognised(reply: str) -> None:
    assert is_stop(reply)
    assert not is_start(reply)


@pytest.mark.parametrize("reply", [
    "don't stop", "please stop texting me?", "STOP IT NOW", "stopped", "the end is near", "start", "",
    "Когда старт?", "не стоп",
])
def test_only_a_whole_message_that_is_a_stop_word_counts(reply: str) -> None:
    assert not is_stop(reply)


@pytest.mark.parametrize("reply", ["START", "start", "Unstop", "СТАРТ", "старт."])
def test_start_words_are_recognised(reply: str) -> None:
    assert is_start(reply)
    assert not is_stop(reply)
