"""The `le` label value of a histogram bucket bound, as the processor writes it.

One definition: the exporters write it and the rule generator (apiusage.rules) selects the
bucket of an SLO's latency threshold by it, so a rule matches the series exactly.
"""

from __future__ import annotations

import math

__all__ = ["le_label"]


def le_label(bound: float) -> str:
    """`1.0` for 1, `0.25` for 0.25, `+Inf` for infinity (Prometheus text format)."""
    bound = float(bound)
    if math.isnan(bound):
        raise ValueError("a histogram bucket bound is not a number (NaN)")
    if math.isinf(bound):
        return "+Inf" if bound > 0 else "-Inf"
    return repr(bound) if bound != int(bound) else f"{bound:.1f}"
