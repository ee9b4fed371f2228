"""Leads: intake from every channel, identity and dedupe, touchpoints, activity, consent, segments."""
