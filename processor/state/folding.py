"""Label limits for the consumer-state families: the busiest values stay, the rest fold into `__other__`.

The request metrics fold first come, first kept (series.py); a report is recomputed
whole at every refresh, so here the `limit` busiest values of a label are kept
(ranked by the family's summed value, ties by value), the same in every window.
Additive families (one plan tier per consumer) are folded here by merging values;
distinct-consumer families are recounted by SQL with the folded labels (see
`folded_columns`), so their `__other__` is a true distinct count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..config import LimitsConfig
from ..derive.series import OVERFLOW_VALUE, sanitize_label_value

__all__ = ["Folder", "Keep", "add", "folded_columns", "merge_histograms"]

Keep = list[frozenset | None]  # per key position: values to keep, or None (keep all)


def add(a: float, b: float) -> float:
    return a + b


def merge_histograms(a: tuple, b: tuple) -> tuple:
    """(bucket counts, sum, count) of two histograms."""
    return [x + y for x, y in zip(a[0], b[0], strict=True)], a[1] + b[1], a[2] + b[2]


class Folder:
    """Sanitizes and folds one report's families, and remembers what it folded."""

    def __init__(self, limits: LimitsConfig | None) -> None:
        self._limits = limits
        self.max_length = limits.max_label_length if limits is not None else 128
        # (metric, label) → (distinct values folded, source series folded)
        self.folded: dict[tuple[str, str], tuple[int, int]] = {}

    def clean(
        self, values: dict[tuple, Any], labels: Sequence[str | None], combine: Callable[[Any, Any], Any] = add
    ) -> dict[tuple, Any]:
        """Label values made printable and bounded (stores written before the Deriver sanitized
        may hold raw ones); keys that become equal are merged."""
        n = self.max_length
        fixes: list[dict[str, str]] = []
        for i, label in enumerate(labels):
            bad = (
                {}
                if label is None
                else {
                    v: sanitize_label_value(v, n)
                    for v in {k[i] for k in values}
                    if v.__class__ is not str or len(v) > n or not v.isprintable()
                }
            )
            fixes.append(bad)
        if not any(fixes):
            return values  # the usual case: the Deriver sanitized these before they were stored
        out: dict[tuple, Any] = {}
        for key, value in values.items():
            key = tuple(f.get(v, v) if f else v for v, f in zip(key, fixes, strict=True))
            out[key] = combine(out[key], value) if key in out else value
        return out

    def keep(
        self, values: dict[tuple, Any], labels: Sequence[str | None], weight: Callable[[Any], float] = float
    ) -> Keep:
        """Per label: the `limit` busiest values, or None when the label is within its limit."""
        out: Keep = []
        for i, label in enumerate(labels):
            if label is None or self._limits is None:
                out.append(None)
                continue
            limit = self._limits.label_limit(label)
            if len({k[i] for k in values}) <= limit:
                out.append(None)
                continue
            totals: dict[str, float] = {}
            for key, value in values.items():
                totals[key[i]] = totals.get(key[i], 0.0) + weight(value)
            out.append(frozenset(sorted(totals, key=lambda v: (-totals[v], v))[:limit]))
        return out

    def fold(
        self,
        metric: str,
        values: dict[tuple, Any],
        labels: Sequence[str | None],
        combine: Callable[[Any, Any], Any] = add,
        keep: Keep | None = None,
        weight: Callable[[Any], float] = float,
    ) -> dict[tuple, Any]:
        """Values past the limits merged into `__other__` with `combine` (exact for additive ones)."""
        keep = self.keep(values, labels, weight) if keep is None else keep
        if all(k is None for k in keep):
            return values
        self.record(metric, values, labels, keep)
        # Per folded position: every value → itself or __other__, so each key costs dict hits.
        folds = [
            (i, {v: v if v in k else OVERFLOW_VALUE for v in {key[i] for key in values}})
            for i, k in enumerate(keep)
            if k is not None
        ]
        out: dict[tuple, Any] = {}
        for key, value in values.items():
            new = list(key)
            for i, to in folds:
                new[i] = to[new[i]]
            key = tuple(new)
            out[key] = combine(out[key], value) if key in out else value
        return out

    def record(self, metric: str, values: dict[tuple, Any], labels: Sequence[str | None], keep: Keep) -> None:
        for i, k in enumerate(keep):
            if k is None:
                continue
            column = [key[i] for key in values]
            distinct = set(column) - k
            series = sum(1 for v in column if v not in k)
            self.folded[metric, labels[i]] = (len(distinct), series)  # type: ignore[index]


def folded_columns(columns: Sequence[str], keep: Keep) -> tuple[list[str], list[str]]:
    """SELECT expressions that fold each column past its kept values, and their parameters."""
    exprs: list[str] = []
    params: list[str] = []
    for column, k in zip(columns, keep, strict=True):
        if k is None:
            exprs.append(column)
        else:
            marks = ", ".join("?" * len(k))
            exprs.append(f"CASE WHEN {column} IN ({marks}) THEN {column} ELSE '{OVERFLOW_VALUE}' END")
            params.extend(sorted(k))
    return exprs, params
