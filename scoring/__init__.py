"""Scoring: behaviour points with exact decay, fit grade, lifecycle stage, explanations."""
