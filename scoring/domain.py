"""The scoring domain as the registry knows it: rule sets, scores, grades, stages."""

from __future__ import annotations

from core.domains import Domain, PersonalData, TemplateContext
from scoring import api, events, jobs, models, privacy

KEPT = "numbers and rule names about a lead whose personal values are gone: the funnel and reports count them"

DOMAIN = Domain(
    name="scoring",
    models=(models,),
    api=(api.router,),
    jobs=(jobs,),
    events=events.EVENTS,
    personal_data=(
        PersonalData("scores", ("lead_scores", "score_caps"), privacy.export_scores, kept=KEPT),
        PersonalData("score_entries", ("score_entries",), privacy.export_score_entries, kept=KEPT),
        PersonalData("stage_history", ("lead_stage_changes",), privacy.export_stage_history,
                     privacy.erase_stage_reasons),
    ),
    template_context=TemplateContext(privacy.TEMPLATE_DEFAULTS, privacy.template_context),
)
