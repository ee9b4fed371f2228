"""Email addresses: validated and normalised by the email_validator library, with a shortcut for
the everyday ones."""

from __future__ import annotations

import re

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from core.errors import Invalid

# The everyday address (ASCII dot-atom at an ASCII domain with a letters-only top level) that the
# library would accept as it is: answered without it, as the library's Unicode checks were the
# largest single cost of a form post and a visible one of composing a message. Anything else (IDN,
# quoted, special-use, too long) goes through the library, which stays the judge: a property test
# holds the two to the same answers.
_PLAIN_EMAIL = re.compile(
    r"(?P<local>[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+(?P<tld>[A-Za-z]{2,63}))"
)
_SPECIAL_USE = frozenset(SPECIAL_USE_DOMAIN_NAMES)


def plain_email(value: str) -> str | None:
    """The lower-cased address when it is an everyday one the library accepts unchanged, else None."""
    match = _PLAIN_EMAIL.fullmatch(value)
    if (
        match is None or len(match["local"]) > 64 or len(value) > 254 or "--" in match["domain"]
        or match["tld"].lower() in _SPECIAL_USE
    ):
        return None
    return value.lower()


def normalize_email(value: str, field: str = "email") -> str:
    """Validated, normalised address (IDN domains in Unicode, lower-cased) used for dedupe."""
    value = value.strip()
    if (plain := plain_email(value)) is not None:
        return plain
    try:
        result = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise Invalid(f"not a valid email address: {exc}", field=field) from None
    return result.normalized.lower()
