"""Message templates as a marketer and a recipient see them: Jinja that survives MJML (comparisons, loops, tags in
links), values escaped in HTML but not in text, a sandbox that refuses to reach into Python, problems named by
field and line when a template is saved, MJML compiled once, tracked links, SMS segments to the character,
and starter templates that are valid in both languages."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import channels.templates.body as body_module
from channels.starters import STARTERS, starter
from channels.templates import (
    EmailTemplate,
    RenderError,
    TemplateInvalid,
    compile_email,
    compile_text,
    html_to_text,
    render,
    sample_context,
    sms_segments,
    validate,
    validate_text,
)

FOOTER = '<mj-text><a href="{{ unsubscribe_url }}">Unsubscribe</a> · <a href="{{ preferences_url }}">Preferences</a>' \
         ' · <a href="mailto:{{ sender.address }}">Write to us</a></mj-text>'


def mjml(content: str, footer: str = FOOTER) -> str:
    """A one-column email around `content`, with a unique comment so no other test shares its cache entry."""
    return f"""<mjml>
<mj-body>
<mj-section>
<mj-column>
{content}
{footer}
</mj-column>
</mj-section>
<mj-raw><!-- {uuid.uuid4().hex} --></mj-raw>
</mj-body>
</mjml>"""


def email(content: str, subject: str = "Hello", **fields: Any) -> EmailTemplate:
    return EmailTemplate(subject=subject, body=mjml(content), **fields)


def context(**lead: Any) -> dict[str, Any]:
    values = sample_context("en")
    values["lead"].update(lead)
    return values


def visible(html: str) -> str:
    return html_to_text(html)


# --- Jinja survives MJML --------------------------------------------------------------------------


def test_a_comparison_with_greater_than_picks_the_right_branch() -> None:
    template = email("<mj-text>{% if score > 50 %}Hot lead{% else %}Warm lead{% endif %}</mj-text>")

    assert validate(template) == []
    hot = render(template, {**context(), "score": 72})
    warm = render(template, {**context(), "score": 10})

    assert "Hot lead" in hot.html and "Warm lead" not in hot.html
    assert "Warm lead" in warm.html and "Hot lead" not in warm.html
    assert "&gt; 50" not in hot.html and "{%" not in hot.html


def test_a_jinja_tag_inside_a_button_href_becomes_the_leads_link() -> None:
    template = email('<mj-button href="https://example.com/offer?email={{ lead.email | urlencode }}&amp;src=mail">'
                     "Get the offer</mj-button>")

    rendered = render(template, context(email="anna+news@example.com"))

    assert 'href="https://example.com/offer?email=anna%2Bnews%40example.com&amp;src=mail"' in rendered.html


def test_a_for_loop_around_mj_text_renders_one_block_per_item() -> None:
    template = email("{% for product in lead.custom.products %}\n"
                     "<mj-text>Product: {{ product }}</mj-text>\n"
                     "{% endfor %}")

    assert validate(template) == []
    rendered = render(template, context(custom={"products": ["Steel beams", "Copper wire", "Glass panels"]}))

    for product in ("Steel beams", "Copper wire", "Glass panels"):
        assert f"Product: {product}</div>" in rendered.html
        assert f"Product: {product}" in rendered.text
    assert rendered.html.count("Product: ") == 3


def test_a_comparison_with_less_than_inside_text_content_survives() -> None:
    template = email("<mj-text>{% if score < 50 %}Still warming up{% endif %}</mj-text>")

    assert "Still warming up" in render(template, {**context(), "score": 10}).html


# --- escaping and the sandbox ---------------------------------------------------------------------


def test_a_lead_name_with_markup_is_escaped_in_html_but_reads_as_written_in_text_and_subject() -> None:
    template = email("<mj-text>Hello {{ lead.first_name }}</mj-text>", subject="Hi {{ lead.first_name }}")

    rendered = render(template, context(first_name="<script>alert(1)</script>"))

    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered.html
    assert "<script>alert(1)" not in rendered.html
    assert "Hello <script>alert(1)</script>" in rendered.text
    assert rendered.subject == "Hi <script>alert(1)</script>"


def test_a_value_with_a_newline_cannot_add_a_header_through_the_subject() -> None:
    template = email("<mj-text>x</mj-text>", subject="News for {{ lead.company }}")

    rendered = render(template, context(company="Acme\r\nBcc: everyone@example.com"))

    assert rendered.subject == "News for Acme Bcc: everyone@example.com"


def test_reaching_into_python_internals_is_refused_when_saved_and_when_rendered() -> None:
    template = email("<mj-text>\n{{ ''.__class__.__mro__ }}\n</mj-text>")

    problems = validate(template)
    assert problems and problems[0].field == "body" and problems[0].line == 6
    assert "not allowed" in problems[0].message and "__class__" in problems[0].message

    with pytest.raises(RenderError) as refused:
        render(template, context())
    assert refused.value.field == "body" and "not allowed" in refused.value.message


def test_the_subject_is_sandboxed_too() -> None:
    template = email("<mj-text>x</mj-text>", subject="{{ lead.first_name|attr('__class__') }}")

    assert [(problem.field, problem.line) for problem in validate(template)] == [("subject", 1)]


def test_a_template_cannot_change_the_values_it_is_given() -> None:
    sender = {"name": "Nurture", "address": "hello@example.com"}
    template = EmailTemplate(subject="{{ sender.pop('name') }}", body=mjml("<mj-text>x</mj-text>"))

    with pytest.raises(RenderError):
        render(template, {**context(), "sender": sender})
    assert sender == {"name": "Nurture", "address": "hello@example.com"}


# --- problems when a template is saved ------------------------------------------------------------


def test_an_unknown_variable_is_named_with_its_line() -> None:
    template = email("<mj-text>Hello {{ lead.first_name }}</mj-text>\n<mj-text>Your phone: {{ lead.phone }}</mj-text>")

    problems = validate(template)

    assert [(problem.field, problem.line) for problem in problems] == [("body", 6)]
    assert "lead.phone" in problems[0].message


def test_a_misspelt_variable_gets_a_suggestion() -> None:
    problems = validate(email("<mj-text>x</mj-text>", subject="Hi {{ lead.firstname }}"))

    assert [(problem.field, problem.line) for problem in problems] == [("subject", 1)]
    assert "did you mean 'lead.first_name'" in problems[0].message


def test_custom_fields_and_every_schema_variable_are_allowed() -> None:
    content = ("<mj-text>{{ lead.first_name }} {{ lead.last_name }} {{ lead.email }} {{ lead.company }} {{ lead.city }}"
               " {{ lead.custom.industry }} {{ score }} {{ grade }} {{ stage }} {{ campaign.name }}"
               " {{ sender.name }} {{ now.year }}</mj-text>")

    assert validate(email(content, preheader="For {{ lead.company }}")) == []


def test_a_syntax_error_is_reported_with_its_line() -> None:
    template = email("<mj-text>\n{% for item in lead.custom.items %}\n{{ item }}\n</mj-text>")

    problems = validate(template)

    assert problems[0].field == "body" and problems[0].line is not None and problems[0].line >= 6
    assert "endfor" in problems[0].message


def test_a_syntax_error_in_the_preheader_names_the_preheader() -> None:
    problems = validate(email("<mj-text>x</mj-text>", preheader="Hi {{ lead.first_name "))

    assert [(problem.field, problem.line) for problem in problems] == [("preheader", 1)]


def test_an_unknown_mjml_element_is_reported_with_its_line() -> None:
    problems = validate(email("<mj-text>x</mj-text>\n<mj-fancy>y</mj-fancy>"))

    assert [(problem.field, problem.line) for problem in problems] == [("body", 6)]
    assert "mj-fancy" in problems[0].message


def test_an_mjml_include_that_would_read_server_files_is_refused() -> None:
    problems = validate(email('<mj-include path="/etc/passwd" />'))

    assert [(problem.field, problem.line) for problem in problems] == [("body", 5)]
    with pytest.raises(TemplateInvalid):
        compile_email(email('<mj-include path="/etc/passwd" />'))


def test_a_jinja_tag_where_mjml_would_drop_it_is_reported_with_its_line() -> None:
    body = mjml("<mj-text>x</mj-text>").replace("<mj-body>", "<mj-head>\n{% if score %}{% endif %}\n</mj-head>\n"
                                                                "<mj-body>")

    problems = validate(EmailTemplate(subject="Hi", body=body))

    assert [(problem.field, problem.line) for problem in problems] == [("body", 3)]
    assert "mj-head" in problems[0].message


def test_an_element_that_mjml_cannot_compile_is_located() -> None:
    body = mjml("<mj-text>ok</mj-text>").replace("<mj-raw>", "<mj-hero><mj-text>x</mj-text></mj-hero>\n<mj-raw>")

    problems = validate(EmailTemplate(subject="Hi", body=body))

    assert [(problem.field, problem.line) for problem in problems] == [("body", 9)]
    assert "MJML" in problems[0].message


def test_a_marketing_email_without_an_unsubscribe_link_is_refused_and_a_transactional_one_is_not() -> None:
    body = mjml("<mj-text>Your invoice is attached.</mj-text>", footer="")

    marketing = validate(EmailTemplate(subject="Invoice", body=body, kind="marketing"))
    transactional = validate(EmailTemplate(subject="Invoice", body=body, kind="transactional"))

    assert [problem.field for problem in marketing] == ["body"]
    assert "unsubscribe" in marketing[0].message
    assert transactional == []


def test_an_empty_subject_is_refused() -> None:
    assert [problem.field for problem in validate(email("<mj-text>x</mj-text>", subject=" "))] == ["subject"]


def test_an_invalid_template_cannot_be_compiled_and_says_which_field() -> None:
    with pytest.raises(TemplateInvalid) as invalid:
        compile_email(email("<mj-text>{% if score %}</mj-text>"))

    assert invalid.value.field == "body" and invalid.value.status == 422
    assert invalid.value.problems[0].line is not None


# --- rendering ------------------------------------------------------------------------------------


def test_mjml_is_compiled_once_per_template_version(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = body_module.mjml_to_html

    def counted(source: str) -> Any:
        calls.append(source)
        return real(source)

    monkeypatch.setattr(body_module, "mjml_to_html", counted)
    body = mjml("<mj-text>Hello {{ lead.first_name }}</mj-text>")

    for name in ("Anna", "Boris", "Clara"):
        assert f"Hello {name}" in render(EmailTemplate(subject="Hi", body=body), context(first_name=name)).html
    render(EmailTemplate(subject="Hi again {{ lead.first_name }}", body=body), context())  # a new subject only
    assert len(calls) == 1

    render(EmailTemplate(subject="Hi", body=body.replace("Hello", "Hi")), context())  # a new body version
    assert len(calls) == 2


def test_the_preheader_becomes_the_hidden_preview_text_escaped() -> None:
    template = email("<mj-text>x</mj-text>", preheader="Offers for {{ lead.company }}")

    rendered = render(template, context(company="Smith & <Sons>"))

    assert rendered.preheader == "Offers for Smith & <Sons>"
    preview = rendered.html.index("Offers for Smith &amp; &lt;Sons&gt;")
    assert "display:none" in rendered.html[rendered.html.rindex("<div", 0, preview):preview]
    assert "Offers for" not in rendered.text


def test_the_plain_text_part_keeps_headings_paragraphs_and_link_urls() -> None:
    template = email('<mj-text><h1>Spring offer</h1><p>Dear {{ lead.first_name }},</p><p>See the '
                     '<a href="https://example.com/catalogue">catalogue</a>.</p></mj-text>\n'
                     '<mj-button href="https://example.com/book" css-class="cta">Book a call</mj-button>')

    text = render(template, context()).text

    assert text.startswith("Spring offer\n\nDear Anna,\n\nSee the catalogue (https://example.com/catalogue).\n")
    assert "Book a call (https://example.com/book)" in text
    assert "Unsubscribe (https://example.com/u/sample-unsubscribe-token)" in text
    assert "Write to us (hello@example.com)" in text


def test_links_are_rewritten_for_tracking_except_unsubscribe_preferences_and_mailto() -> None:
    template = email('<mj-text><a href="https://example.com/blog?a=1&amp;b=2" data-tag="blog">Blog</a> '
                     '<a href="https://example.com/plain">Plain</a></mj-text>\n'
                     '<mj-button href="https://example.com/demo" css-class="demo">Demo</mj-button>')
    seen: list[tuple[str, str | None]] = []

    def rewrite(url: str, tag: str | None) -> str:
        seen.append((url, tag))
        return f"https://t.example/c/{len(seen)}?sig=a&b"

    rendered = render(template, context(), rewrite_link=rewrite)

    expected = [("https://example.com/blog?a=1&b=2", "blog"), ("https://example.com/plain", None),
                ("https://example.com/demo", "demo")]
    assert seen == expected and list(rendered.links) == expected
    assert 'href="https://t.example/c/1?sig=a&amp;b"' in rendered.html
    assert "https://example.com/blog" not in rendered.html
    assert 'href="https://example.com/u/sample-unsubscribe-token"' in rendered.html
    assert 'href="https://example.com/p/sample-preferences-token"' in rendered.html
    assert 'href="mailto:hello@example.com"' in rendered.html
    assert "Blog (https://t.example/c/1?sig=a&b)" in rendered.text
    assert "Demo (https://t.example/c/3?sig=a&b)" in rendered.text
    assert "Unsubscribe (https://example.com/u/sample-unsubscribe-token)" in rendered.text


def test_without_a_rewriter_the_links_are_still_listed_and_left_alone() -> None:
    rendered = render(email('<mj-text><a href="https://example.com/x?y=1&notify=2">x</a></mj-text>'), context())

    assert list(rendered.links) == [("https://example.com/x?y=1&notify=2", None)]
    assert "x (https://example.com/x?y=1&notify=2)" in rendered.text


def test_a_custom_field_the_lead_lacks_reads_as_empty() -> None:
    template = email("<mj-text>Industry: [{{ lead.custom.industry }}] City: [{{ lead.city }}]</mj-text>")

    rendered = render(template, context(custom={}, city=None))

    assert "Industry: [] City: []" in rendered.text


def test_a_missing_schema_value_fails_the_render_naming_field_and_line() -> None:
    template = email("<mj-text>\nHello {{ lead.first_name }}\n</mj-text>")
    values = context()
    del values["lead"]["first_name"]

    with pytest.raises(RenderError) as failed:
        render(template, values)

    assert failed.value.field == "body" and failed.value.problem.line == 6


def test_a_compiled_template_renders_many_recipients() -> None:
    compiled = compile_email(email("<mj-text>Hello {{ lead.first_name }}</mj-text>"))

    texts = [compiled.render(context(first_name=name)).text for name in ("Anna", "Boris")]

    assert [text.splitlines()[0] for text in texts] == ["Hello Anna", "Hello Boris"]


# --- previews and starters ------------------------------------------------------------------------


def test_sample_leads_read_naturally_in_russian_and_english() -> None:
    russian, english = sample_context("ru"), sample_context("en-GB")

    assert (russian["lead"]["first_name"], russian["lead"]["last_name"]) == ("Анна", "Смирнова")
    assert (english["lead"]["first_name"], english["lead"]["last_name"]) == ("Anna", "Smith")
    assert russian["lead"]["company"] and russian["lead"]["city"] == "Санкт-Петербург"


@pytest.mark.parametrize("name", ["welcome", "webinar"])
@pytest.mark.parametrize("locale", ["ru", "en"])
def test_starter_templates_validate_and_render_in_both_languages(name: str, locale: str) -> None:
    template = starter(name, locale)

    assert validate(template) == []
    rendered = render(template, sample_context(locale), rewrite_link=lambda url, tag: f"https://t.example/{tag}")
    lead = sample_context(locale)["lead"]["first_name"]
    assert lead in rendered.subject or lead in rendered.text
    assert rendered.preheader and rendered.links and all(tag for _, tag in rendered.links)
    assert "https://example.com/u/sample-unsubscribe-token" in rendered.text
    assert template is STARTERS[name][locale]


# --- SMS and messenger ----------------------------------------------------------------------------


def test_an_sms_template_renders_in_the_sandbox() -> None:
    sms = compile_text("{{ lead.first_name }}, webinar at 11:00 tomorrow: {{ campaign.name }}")

    assert sms.render(context()) == "Anna, webinar at 11:00 tomorrow: Welcome series"
    assert validate_text("Hi {{ lead.nickname }}")[0].field == "text"
    assert validate_text("Hi {{ lead.first_name.__class__ }}")[0].line == 1
    assert validate_text("Hi {{ lead.first_name }}") == []


@pytest.mark.parametrize(("text", "encoding", "characters", "segments", "per_segment"), [
    ("", "GSM-7", 0, 0, 160),
    ("a" * 160, "GSM-7", 160, 1, 160),
    ("a" * 161, "GSM-7", 161, 2, 153),
    ("a" * 306, "GSM-7", 306, 2, 153),
    ("a" * 307, "GSM-7", 307, 3, 153),
    ("a" * 158 + "€", "GSM-7", 160, 1, 160),
    ("a" * 159 + "€", "GSM-7", 161, 2, 153),
    ("€" * 80, "GSM-7", 160, 1, 160),
    ("a" * 152 + "€" + "a" * 152, "GSM-7", 306, 3, 153),  # the escape pair never straddles two segments
    ("Ж" * 70, "UCS-2", 70, 1, 70),
    ("Ж" * 71, "UCS-2", 71, 2, 67),
    ("Ж" * 134, "UCS-2", 134, 2, 67),
    ("Ж" * 135, "UCS-2", 135, 3, 67),
    ("a" * 69 + "😀", "UCS-2", 71, 2, 67),  # an emoji is two UTF-16 units
    ("Привет, {Anna}!", "UCS-2", 15, 1, 70),
])
def test_sms_segments_at_the_exact_boundaries(text: str, encoding: str, characters: int, segments: int,
                                              per_segment: int) -> None:
    info = sms_segments(text)

    assert (info.encoding, info.characters, info.segments, info.per_segment) == (
        encoding, characters, segments, per_segment)
