"""Half a character (a lone UTF-16 surrogate, sent as the JSON escape "\\udXXX" or as raw
surrogate bytes) and NULs in any text field of the public intake endpoints: 2xx or a 4xx naming
the field, never a 5xx — PostgreSQL refuses such text, so it must be repaired or refused first.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests.leads.test_calls import signed
from tests.leads.test_forms import GOOD, make_form

# Plausible text with half a character (and sometimes a NUL) in it, so most posts get past the
# other checks and reach the database.
broken_text = st.builds(
    lambda prefix, half, tail: prefix + half + tail,
    st.sampled_from(["", "https://example.ru/a?b=", "Мария", "yandex", "visitor-00"]),
    st.integers(0xD800, 0xDFFF).map(chr),
    st.sampled_from(["", "x", "\x00", "я/1"]),
)
# Mostly the "\udXXX" escape a JSON encoder writes; sometimes the bytes surrogatepass makes
# (ED A0 80…), which are not UTF-8 at all.
escaped = st.sampled_from([True, True, True, False])
SETTINGS = hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def raw_json(value: dict[str, Any], as_escapes: bool) -> bytes:
    return json.dumps(value, ensure_ascii=as_escapes).encode("utf-8", "surrogatepass")


def assert_answered(resp: httpx.Response, posted: dict[str, Any]) -> None:
    """Never a 5xx; a 422 names what the client sent (`tags.0`, not some internal `data.…`)."""
    assert resp.status_code < 500, resp.text
    if resp.status_code == 422:
        field = resp.json()["error"]["field"]
        assert field == "body" or str(field).split(".")[0] in posted, resp.text


FORM_KEYS = ["first_name", "comment", "_page", "_referrer", "_vid", *(
    f"utm_{k}" for k in ("source", "medium", "campaign", "content", "term"))]


@SETTINGS
@given(changes=st.dictionaries(st.sampled_from(FORM_KEYS), broken_text, min_size=1, max_size=3), as_escapes=escaped)
async def test_form_post_with_lone_surrogates_anywhere_gets_2xx_or_a_4xx_naming_the_field(
    client: httpx.AsyncClient, admin_headers: dict[str, str], changes: dict[str, str], as_escapes: bool
) -> None:
    if (await client.get("/v1/forms/contact", headers=admin_headers)).status_code == 404:
        fields = [{"name": "first_name", "label": "Имя"}, {"name": "email", "label": "Email", "type": "email"},
                  {"name": "phone", "label": "Телефон", "type": "phone"},
                  {"name": "comment", "label": "Комментарий", "type": "textarea"}]
        await make_form(client, admin_headers, fields=fields)
    posted = {**GOOD, **changes}
    resp = await client.post(
        "/v1/forms/contact/submit", content=raw_json(posted, as_escapes), headers={"content-type": "application/json"}
    )
    assert_answered(resp, posted)


EVENT_KEYS = ["url", "referrer", "title", "utm_source", "utm_campaign", "utm_term"]


@SETTINGS
@given(
    changes=st.dictionaries(st.sampled_from(EVENT_KEYS), broken_text, min_size=1, max_size=3),
    properties=st.dictionaries(st.sampled_from(["plan", "файл"]), broken_text, max_size=1),
    keyed=st.booleans(), as_escapes=escaped,
)
async def test_event_with_lone_surrogates_anywhere_gets_2xx_or_a_4xx_naming_the_field(
    client: httpx.AsyncClient, admin_headers: dict[str, str], changes: dict[str, str],
    properties: dict[str, str], keyed: bool, as_escapes: bool,
) -> None:
    event = {"type": "page_view", "url": "https://example.ru/", "properties": properties, **changes}
    if keyed:
        event.pop("visitor_id", None)
        event.setdefault("email", "maria@example.ru")
    else:
        event.pop("email", None)
        event.setdefault("visitor_id", "visitor-0001")
    headers = {"content-type": "application/json", **(admin_headers if keyed else {})}
    resp = await client.post("/v1/events", content=raw_json(event, as_escapes), headers=headers)
    assert_answered(resp, event)


LEAD_KEYS = ["first_name", "last_name", "company", "city", "utm_source", "utm_term", "visitor_id"]


@SETTINGS
@given(
    changes=st.dictionaries(st.sampled_from(LEAD_KEYS), broken_text, min_size=1, max_size=2),
    tags=st.lists(broken_text, max_size=1), as_escapes=escaped,
)
async def test_api_lead_with_lone_surrogates_anywhere_gets_2xx_or_a_4xx_naming_the_field(
    client: httpx.AsyncClient, admin_headers: dict[str, str], changes: dict[str, str], tags: list[str],
    as_escapes: bool,
) -> None:
    lead = {"email": "maria@example.ru", "tags": tags, **changes}
    headers = {**admin_headers, "content-type": "application/json"}
    resp = await client.post("/v1/leads", content=raw_json(lead, as_escapes), headers=headers)
    assert_answered(resp, lead)


CALL_KEYS = ["caller", "tracking_number", "recording_url", "call_id"]


@SETTINGS
@given(changes=st.dictionaries(st.sampled_from(CALL_KEYS), broken_text, min_size=1, max_size=2), as_escapes=escaped)
async def test_call_with_lone_surrogates_anywhere_gets_2xx_or_a_4xx_naming_the_field(
    client: httpx.AsyncClient, changes: dict[str, str], as_escapes: bool
) -> None:
    call = {"caller": "+79123456789", "status": "missed", **changes}
    body = raw_json(call, as_escapes)
    resp = await client.post("/v1/calls", content=body, headers=signed(body))
    assert_answered(resp, call)
