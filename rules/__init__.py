"""Prometheus recording and alerting rules generated from the SLO file (`apiusage rules`)."""

from .catalog import PANELS, SLUGS, Alert, alerts
from .generate import FILES, generate, render, shorten_for_tests, stale, write
from .slo import SloError, SloFile, load_slo, parse_slo

__all__ = [
    "FILES",
    "PANELS",
    "SLUGS",
    "Alert",
    "SloError",
    "SloFile",
    "alerts",
    "generate",
    "load_slo",
    "parse_slo",
    "render",
    "shorten_for_tests",
    "stale",
    "write",
]
