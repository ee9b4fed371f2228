"""Phone numbers: E.164 through the phonenumbers library, the one form nurture stores and compares."""

from __future__ import annotations

import phonenumbers

from core.errors import Invalid


def normalize_phone(value: str, region: str | None, field: str = "phone") -> str:
    """E.164, parsed with the form's or account's default region when there is no country code."""
    try:
        number = phonenumbers.parse(value.strip(), (region or "").upper() or None)
    except phonenumbers.NumberParseException:
        raise Invalid(f"not a phone number: {value!r}", field=field) from None
    if not phonenumbers.is_possible_number(number) or not phonenumbers.is_valid_number(number):
        raise Invalid(f"not a valid phone number: {value!r}", field=field)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def e164(value: str, field: str) -> str:
    """A phone number written with its country code (+…), as E.164."""
    if not value.strip().startswith("+"):
        raise Invalid("must be an international number in E.164 form, such as +79123456789", field=field)
    return normalize_phone(value, None, field)
