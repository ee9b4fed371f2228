"""The channels domain as the registry knows it: templates, the delivery ledger, suppressions,
returned mail, tracking and the provider callbacks."""

from __future__ import annotations

from channels import api, jobs, models, pages, privacy
from channels.sms import webhooks as sms_webhooks
from core.domains import Domain, PersonalData

DOMAIN = Domain(
    name="channels",
    models=(models,),
    public=(pages.router, sms_webhooks.router),
    api=(api.router,),
    jobs=(jobs,),
    personal_data=(
        # captured copies before the messages: they are found through the messages' lead
        PersonalData("captured_mail", ("captured_mail",), privacy.export_captured, privacy.erase_captured),
        PersonalData("messages", ("messages",), privacy.export_messages, privacy.erase_messages),
        PersonalData("bounces", ("bounces",), privacy.export_bounces, privacy.erase_bounces),
        PersonalData("suppressions", ("suppressions",), privacy.export_suppressions, privacy.erase_suppressions),
    ),
)
