"""The predictive score: a calibrated model of how likely a lead is to buy, fitted on the leads
whose outcome is known (a `deal_won` or `deal_lost` activity, or the stage customer /
disqualified), from what they were and did before the outcome. `nurture train-model` fits it,
reports its AUC on a held-out split next to the rules' AUC on the same split, and stores it as a
new version; each lead then gets a probability and the features that pushed it up most."""

from __future__ import annotations

import io
import pickle
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core import clock
from core.errors import Invalid
from leads.models import Activity
from scoring.models import LeadScore, PredictiveModel
from scoring.rules import Ruleset, decayed, is_free_mail
from scoring.scores import load_profiles

WINDOW = timedelta(days=90)
COUNTED = ("page_view", "download", "form_submitted", "email_opened", "email_clicked", "call_answered",
           "email_received")
DECISION_WORDS = ("director", "head", "chief", "ceo", "cto", "cfo", "owner", "founder", "vp",
                  "директор", "руководитель", "начальник", "владелец", "основатель")
LARGE_COMPANY = ("51-200", "201-500", "501-1000", "1001-5000", "5000+")
FEATURES = (
    "corporate_mail", "decision_maker", "large_company",
    *(f"{kind}_30d" for kind in COUNTED), *(f"{kind}_90d" for kind in COUNTED),
    "pricing_views_90d", "days_since_last", "rules_score",
)
OUTCOMES = {"deal_won": 1, "deal_lost": 0}
MIN_SAMPLES = 40


@dataclass
class Trained:
    version: int
    auc: float
    rules_auc: float | None
    samples: int
    won: int
    lost: int


async def outcomes(session: AsyncSession) -> dict[uuid.UUID, tuple[int, datetime]]:
    """Leads with a known outcome: 1 won / 0 lost, and when (the latest outcome counts)."""
    rows = await session.execute(
        select(Activity.lead_id, Activity.type, Activity.occurred_at)
        .where(Activity.type.in_(list(OUTCOMES)), Activity.lead_id.is_not(None))
    )
    known: dict[uuid.UUID, tuple[int, datetime]] = {}
    for row in rows:
        if row.lead_id not in known or row.occurred_at > known[row.lead_id][1]:
            known[row.lead_id] = (OUTCOMES[row.type], row.occurred_at)
    staged = await session.execute(
        select(LeadScore.lead_id, LeadScore.stage, LeadScore.stage_at)
        .where(LeadScore.stage.in_(["customer", "disqualified"]))
    )
    for row in staged:
        known.setdefault(row.lead_id, (1 if row.stage == "customer" else 0, row.stage_at))
    return known


async def features(session: AsyncSession, cutoffs: dict[uuid.UUID, datetime],
                   ruleset: Ruleset) -> dict[uuid.UUID, list[float]]:
    """Each lead's features as of its cut-off (what it was and did before then)."""
    if not cutoffs:
        return {}
    ids = list(cutoffs)
    earliest = min(cutoffs.values()) - WINDOW
    counts: dict[uuid.UUID, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    last: dict[uuid.UUID, datetime] = {}
    score: dict[uuid.UUID, float] = defaultdict(float)
    for start in range(0, len(ids), 1000):
        chunk = ids[start:start + 1000]
        rows = await session.execute(
            select(Activity.lead_id, Activity.type, Activity.data, Activity.occurred_at)
            .where(Activity.lead_id.in_(chunk), Activity.occurred_at >= earliest,
                   Activity.type.not_in(list(OUTCOMES)))
        )
        for row in rows:
            cutoff = cutoffs[row.lead_id]
            if row.occurred_at >= cutoff or row.occurred_at < cutoff - WINDOW:
                continue
            mine = counts[row.lead_id]
            if row.type in COUNTED:
                mine[f"{row.type}_90d"] += 1
                if row.occurred_at >= cutoff - timedelta(days=30):
                    mine[f"{row.type}_30d"] += 1
            url = (row.data or {}).get("url") or ""
            if row.type == "page_view" and "/pricing" in str(url):
                mine["pricing_views_90d"] += 1
            if row.lead_id not in last or row.occurred_at > last[row.lead_id]:
                last[row.lead_id] = row.occurred_at
        scores = await session.execute(
            select(LeadScore.lead_id, LeadScore.points, LeadScore.as_of)
            .where(LeadScore.lead_id.in_(chunk), LeadScore.version == ruleset.version)
        )
        for row in scores:
            score[row.lead_id] = decayed(row.points, row.as_of, cutoffs[row.lead_id], ruleset.half_life)
    profiles = await load_profiles(session, ids)
    result = {}
    for lead_id in ids:
        profile = profiles.get(lead_id, {})
        email = profile.get("email") or ""
        title = str(profile.get("job_title") or "").casefold()
        base = {
            "corporate_mail": float("@" in email and not is_free_mail(email.rsplit("@", 1)[-1].lower())),
            "decision_maker": float(any(word in title for word in DECISION_WORDS)),
            "large_company": float(profile.get("company_size") in LARGE_COMPANY),
            "days_since_last": min(365.0, (cutoffs[lead_id] - last[lead_id]).total_seconds() / 86400)
            if lead_id in last else 365.0,
            "rules_score": score.get(lead_id, 0.0),
            **counts.get(lead_id, {}),
        }
        result[lead_id] = [float(base.get(name, 0.0)) for name in FEATURES]
    return result


async def train(session: AsyncSession, ruleset: Ruleset, seed: int = 7) -> Trained:
    """Fit, evaluate on a held-out quarter, store as the next version. Never commits."""
    import numpy as np
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    known = await outcomes(session)
    labels = {lead_id: label for lead_id, (label, _) in known.items()}
    won = sum(labels.values())
    lost = len(labels) - won
    if len(labels) < MIN_SAMPLES or min(won, lost) < 10:
        raise Invalid(f"need at least {MIN_SAMPLES} leads with a known outcome, 10 of each kind "
                      f"(have {won} won, {lost} lost)", field="outcomes")
    table = await features(session, {lead_id: at for lead_id, (_, at) in known.items()}, ruleset)
    ids = sorted(table)
    x = np.array([table[i] for i in ids])
    y = np.array([labels[i] for i in ids])
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    model = CalibratedClassifierCV(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0)), method="sigmoid", cv=3,
    )
    model.fit(x_train, y_train)
    auc = float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]))
    rules_column = FEATURES.index("rules_score")
    rules_auc = float(roc_auc_score(y_test, x_test[:, rules_column])) if len(set(y_test)) > 1 else None
    model.fit(x, y)  # the stored model learns from every known outcome
    last = await session.scalar(select(func.max(PredictiveModel.version))) or 0
    buffer = io.BytesIO()
    pickle.dump(model, buffer)
    session.add(PredictiveModel(version=last + 1, auc=auc, rules_auc=rules_auc, samples=len(ids),
                                features=list(FEATURES), algorithm="logistic regression, sigmoid-calibrated (3-fold)",
                                blob=buffer.getvalue()))
    await session.flush()
    return Trained(last + 1, round(auc, 4), round(rules_auc, 4) if rules_auc is not None else None, len(ids), won, lost)


_loaded: dict[uuid.UUID, Any] = {}


async def predict(session: AsyncSession, lead_ids: list[uuid.UUID], ruleset: Ruleset,
                  top: int = 3) -> dict[uuid.UUID, dict[str, Any]]:
    """Probability of buying now and the features that raise it most, per lead (nothing before a
    model has been trained)."""
    row = await session.scalar(select(PredictiveModel).order_by(PredictiveModel.version.desc()).limit(1))
    if row is None or not lead_ids:
        return {}
    if (model := _loaded.get(row.id)) is None:
        model = _loaded[row.id] = pickle.loads(row.blob)  # noqa: S301 - our own model, from our own database
    now = clock.now()
    table = await features(session, dict.fromkeys(lead_ids, now), ruleset)
    import numpy as np

    ids = list(table)
    x = np.array([table[i] for i in ids])
    probabilities = model.predict_proba(x)[:, 1]
    # reasons: each feature's pull (coefficient × standardised value), averaged over the folds
    pulls = np.zeros_like(x, dtype=float)
    for calibrated in model.calibrated_classifiers_:
        pipeline = calibrated.estimator
        scaler, regression = pipeline[0], pipeline[-1]
        pulls += scaler.transform(x) * regression.coef_[0]
    pulls /= len(model.calibrated_classifiers_)
    result = {}
    for index, lead_id in enumerate(ids):
        order = np.argsort(-pulls[index])[:top]
        result[lead_id] = {
            "probability": round(float(probabilities[index]), 4), "model_version": row.version,
            "reasons": [
                {"feature": row.features[j], "value": float(x[index][j]), "pull": round(float(pulls[index][j]), 3)}
                for j in order if pulls[index][j] > 0
            ],
        }
    return result
