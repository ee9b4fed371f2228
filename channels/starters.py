"""Ready email templates a marketer starts from: a welcome (nurture) email and a webinar invitation, in Russian
and English. Each validates cleanly; the webinar's date and link are sample text to edit."""

from __future__ import annotations

from channels.templates import EmailTemplate

_FOOTER = {
    "ru": ("Вы получили это письмо, потому что оставили заявку на нашем сайте.",
           "Отписаться", "Настроить рассылку"),
    "en": ("You are receiving this email because you signed up on our website.",
           "Unsubscribe", "Email preferences"),
}


def _layout(locale: str, content: str) -> str:
    reason, unsubscribe, preferences = _FOOTER[locale]
    return f"""<mjml lang="{locale}">
  <mj-head>
    <mj-attributes>
      <mj-all font-family="Helvetica, Arial, sans-serif" />
      <mj-text font-size="16px" line-height="1.5" color="#1f2933" />
      <mj-button background-color="#2563eb" color="#ffffff" font-size="16px" border-radius="6px" />
    </mj-attributes>
  </mj-head>
  <mj-body background-color="#f3f4f6">
    <mj-section background-color="#ffffff" padding="24px 0">
      <mj-column>
{content}
      </mj-column>
    </mj-section>
    <mj-section padding="16px 0">
      <mj-column>
        <mj-text font-size="12px" color="#6b7280" align="center">
          {reason}<br />
          {{{{ sender.name }}}} · <a href="mailto:{{{{ sender.address }}}}">{{{{ sender.address }}}}</a><br />
          <a href="{{{{ unsubscribe_url }}}}">{unsubscribe}</a> · <a href="{{{{ preferences_url }}}}">{preferences}</a>
        </mj-text>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>"""


_WELCOME_RU = """        <mj-text>
          <h1 style="font-size:24px;margin:0 0 16px">
            Здравствуйте{% if lead.first_name %}, {{ lead.first_name }}{% endif %}!
          </h1>
          <p>Спасибо за интерес к нашим решениям. В ближайшие недели мы пришлём несколько писем с кейсами и
          практическими советами{% if lead.company %} — подобранными для {{ lead.company }}{% endif %}.</p>
          <p>С чего начать:</p>
          <ul>
            <li><a href="https://example.com/ru/guide" data-tag="guide">Руководство по быстрому старту</a></li>
            <li><a href="https://example.com/ru/cases" data-tag="cases">Кейсы клиентов</a></li>
          </ul>
        </mj-text>
        {% if score > 50 %}
        <mj-text>Похоже, вы уже выбираете решение. Обсудим вашу задачу за 20 минут?</mj-text>
        <mj-button href="https://example.com/ru/demo" css-class="demo">Записаться на демо</mj-button>
        {% else %}
        <mj-button href="https://example.com/ru/guide" css-class="guide-button">Открыть руководство</mj-button>
        {% endif %}
        <mj-text>С уважением,<br />{{ sender.name }}</mj-text>"""

_WELCOME_EN = """        <mj-text>
          <h1 style="font-size:24px;margin:0 0 16px">
            Hello{% if lead.first_name %} {{ lead.first_name }}{% endif %}!
          </h1>
          <p>Thank you for your interest. Over the next few weeks we will send you a few emails with customer
          stories and practical tips{% if lead.company %}, picked for {{ lead.company }}{% endif %}.</p>
          <p>Where to start:</p>
          <ul>
            <li><a href="https://example.com/guide" data-tag="guide">The quick-start guide</a></li>
            <li><a href="https://example.com/cases" data-tag="cases">Customer stories</a></li>
          </ul>
        </mj-text>
        {% if score > 50 %}
        <mj-text>Looks like you are choosing a solution already. Shall we talk it through in 20 minutes?</mj-text>
        <mj-button href="https://example.com/demo" css-class="demo">Book a demo</mj-button>
        {% else %}
        <mj-button href="https://example.com/guide" css-class="guide-button">Open the guide</mj-button>
        {% endif %}
        <mj-text>Best regards,<br />{{ sender.name }}</mj-text>"""

_WEBINAR_RU = """        <mj-text>
          <h1 style="font-size:24px;margin:0 0 16px">Вебинар: как сократить цикл сделки вдвое</h1>
          <p>{% if lead.first_name %}{{ lead.first_name }}, п{% else %}П{% endif %}риглашаем вас на открытый
          вебинар. За час разберём, как настроить прогрев лидов и вовремя передавать их в отдел продаж.</p>
          <p><strong>Когда:</strong> 24 апреля, 11:00 (МСК)<br /><strong>Где:</strong> онлайн, ссылка придёт
          после регистрации</p>
        </mj-text>
        <mj-button href="https://example.com/ru/webinar?email={{ lead.email | urlencode }}" css-class="register">
          Зарегистрироваться
        </mj-button>
        <mj-text>До встречи!<br />{{ sender.name }}</mj-text>"""

_WEBINAR_EN = """        <mj-text>
          <h1 style="font-size:24px;margin:0 0 16px">Webinar: how to halve your sales cycle</h1>
          <p>{% if lead.first_name %}{{ lead.first_name }}, you{% else %}You{% endif %} are invited to our open
          webinar. In one hour we will show how to nurture leads and hand them to sales at the right moment.</p>
          <p><strong>When:</strong> April 24, 11:00 (UTC+3)<br /><strong>Where:</strong> online, the link comes
          after registration</p>
        </mj-text>
        <mj-button href="https://example.com/webinar?email={{ lead.email | urlencode }}" css-class="register">
          Register
        </mj-button>
        <mj-text>See you there!<br />{{ sender.name }}</mj-text>"""

STARTERS: dict[str, dict[str, EmailTemplate]] = {
    "welcome": {
        "ru": EmailTemplate(
            subject="{% if lead.first_name %}{{ lead.first_name }}, добро{% else %}Добро{% endif %} пожаловать!",
            preheader="С чего начать и чем мы можем помочь",
            body=_layout("ru", _WELCOME_RU),
        ),
        "en": EmailTemplate(
            subject="Welcome{% if lead.first_name %}, {{ lead.first_name }}{% endif %}!",
            preheader="Where to start and how we can help",
            body=_layout("en", _WELCOME_EN),
        ),
    },
    "webinar": {
        "ru": EmailTemplate(
            subject="Приглашение на вебинар: как сократить цикл сделки вдвое",
            preheader="24 апреля, 11:00 (МСК), онлайн и бесплатно",
            body=_layout("ru", _WEBINAR_RU),
        ),
        "en": EmailTemplate(
            subject="You're invited: how to halve your sales cycle",
            preheader="April 24, 11:00 (UTC+3), online and free",
            body=_layout("en", _WEBINAR_EN),
        ),
    },
}


def starter(name: str, locale: str = "en") -> EmailTemplate:
    """A starter template by name ("welcome", "webinar") in "ru" or "en" (any other locale gets English)."""
    by_locale = STARTERS[name]
    return by_locale.get(locale.split("-")[0].lower(), by_locale["en"])


_OPTIN = {
    "ru": ("Подтвердите подписку", "Один клик, и вы в списке",
           "Здравствуйте{% if lead.first_name %}, {{ lead.first_name }}{% endif %}!",
           "Вы оставили адрес на нашем сайте и попросили присылать письма. Подтвердите, что это были вы:",
           "Подтвердить подписку",
           "Если вы ничего не оставляли, просто не отвечайте на это письмо: без подтверждения мы писать не будем."),
    "en": ("Please confirm your subscription", "One click and you are on the list",
           "Hello{% if lead.first_name %} {{ lead.first_name }}{% endif %}!",
           "You left your address on our website and asked for our emails. Please confirm it was you:",
           "Confirm my subscription",
           "If it was not you, just ignore this email: without a confirmation we will not write to you."),
}


def _optin(locale: str) -> EmailTemplate:
    subject, preheader, greeting, ask, button, ignore = _OPTIN[locale]
    body = f"""<mjml lang="{locale}">
  <mj-body background-color="#f3f4f6">
    <mj-section background-color="#ffffff" padding="24px 0">
      <mj-column>
        <mj-text font-family="Helvetica, Arial, sans-serif" font-size="16px" line-height="1.5">
          <p>{greeting}</p><p>{ask}</p>
        </mj-text>
        <mj-button href="{{{{ confirm_url }}}}" background-color="#2563eb" font-size="16px">{button}</mj-button>
        <mj-text font-family="Helvetica, Arial, sans-serif" font-size="13px" color="#6b7280">{ignore}</mj-text>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>"""
    return EmailTemplate(subject=subject, preheader=preheader, body=body, kind="transactional")


# Built-in mail nurture sends on its own (by the `system:` key a message names), never edited by marketers.
SYSTEM: dict[str, EmailTemplate] = {f"system:optin:{locale}": _optin(locale) for locale in _OPTIN}
