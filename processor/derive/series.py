"""Series of one metric family, keyed by label values, bounded in count and in time.

Each label has a limit of distinct values per metric; a value past the limit
folds into `__other__` and the fold is counted (`apiusage_label_overflow_total`).
Series not updated for `ttl` seconds are dropped, and their label values free
their place under the limit, so memory follows the traffic of the last minutes,
not every route or client version ever seen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..telemetry import PipelineStats

if TYPE_CHECKING:
    from ..config import LimitsConfig

__all__ = ["SeriesTable", "OVERFLOW_VALUE", "sanitize_label_value"]

OVERFLOW_VALUE = "__other__"
_MAX_RESOLVED = 100_000


def sanitize_label_value(value: object, max_length: int) -> str:
    """A printable label value of bounded length (control characters become spaces)."""
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    # Cut first: every step below maps one character to one, so the result is the same, and a
    # 16 MiB value costs a slice instead of a walk over every character.
    if len(text) > max_length:
        text = text[: max_length - 1] + "…"
    if not text.isprintable():
        # Control, format and separator characters would break dashboards and logs; lone
        # surrogates cannot be encoded on the wire at all.
        text = "".join(c if c.isprintable() else " " for c in text)
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


class SeriesTable:
    """One metric family's series: label-value tuple → mutable cell (a list).

    `cell(raw_key, now)` is the only entry on the hot path; it is a dict hit for
    a key already seen.  Cells are created by `new_cell()`; index 0 of every
    cell holds the time of its last update.
    """

    def __init__(
        self,
        metric: str,
        labels: Sequence[str],
        limits: Sequence[int],
        max_length: int,
        ttl: float,
        new_cell: Callable[[], list[Any]],
        stats: PipelineStats,
        scoped: tuple[int, int, int] | None = None,
    ) -> None:
        """`scoped` (label index, prefix length, limit) also bounds that label's distinct values
        within each value of the labels before it (per endpoint), so one noisy endpoint cannot
        take every place of a label the whole family shares."""
        self.metric = metric
        self.labels = tuple(labels)
        self._limits = tuple(limits)
        self._max_length = max_length
        self._ttl = ttl
        self._new_cell = new_cell
        self._stats = stats
        self.series: dict[tuple[Any, ...], list[Any]] = {}
        # Per label: value → number of live series using it.
        self._values: list[dict[str, int]] = [{} for _ in self.labels]
        self._scoped = scoped
        # Scope prefix → value of the scoped label → number of live series using it.
        self._scope_values: dict[tuple[Any, ...], dict[str, int]] = {}
        # raw key → (cell, labels folded into __other__); rebuilt after every sweep.
        self._resolved: dict[tuple[Any, ...], tuple[list[Any], tuple[str, ...]]] = {}

    @classmethod
    def limited(
        cls,
        metric: str,
        labels: Sequence[str],
        limits: LimitsConfig,
        new_cell: Callable[[], list[Any]],
        stats: PipelineStats,
        scoped: tuple[int, int, int] | None = None,
    ) -> SeriesTable:
        """A table bounded as `limits` says: values per label, label length, series TTL."""
        return cls(
            metric,
            labels,
            [limits.label_limit(label) for label in labels],
            limits.max_label_length,
            float(limits.series_ttl),
            new_cell,
            stats,
            scoped,
        )

    def cell(self, raw_key: tuple[Any, ...], now: float, weight: float = 1.0) -> list[Any]:
        hit = self._resolved.get(raw_key)
        if hit is None:
            hit = self._resolve(raw_key)
            if len(self._resolved) >= _MAX_RESOLVED:
                self._resolved.clear()  # raw values folding into __other__ are unbounded
            self._resolved[raw_key] = hit
        cell, folded = hit
        if folded:
            for label in folded:
                self._stats.overflow(self.metric, label, weight)
        cell[0] = now
        return cell

    def cell_folds(self, raw_key: tuple[Any, ...], now: float, weight: float = 1.0) -> tuple[list[Any], bool]:
        """`cell()`, and whether a label of the key folded into __other__ (then every update must
        come through here again, so that each one counts in the overflow)."""
        cell = self.cell(raw_key, now, weight)
        return cell, bool(self._resolved[raw_key][1])  # cell() has just put it there

    def _resolve(self, raw_key: tuple[Any, ...]) -> tuple[list[Any], tuple[str, ...]]:
        key: list[Any] = []
        folded = []
        scoped_at, prefix_length, scoped_limit = self._scoped or (-1, 0, 0)
        for i, raw in enumerate(raw_key):
            value = sanitize_label_value(raw, self._max_length)
            known = self._values[i]
            if value not in known and len(known) >= self._limits[i]:
                value = OVERFLOW_VALUE
                folded.append(self.labels[i])
            elif i == scoped_at and value != OVERFLOW_VALUE:
                in_scope = self._scope_values.get(tuple(key[:prefix_length]))
                if in_scope is not None and value not in in_scope and len(in_scope) >= scoped_limit:
                    value = OVERFLOW_VALUE
                    folded.append(self.labels[i])
            key.append(value)
        key_t = tuple(key)
        cell = self.series.get(key_t)
        if cell is None:
            cell = self._new_cell()
            self.series[key_t] = cell
            for i, value in enumerate(key_t):
                if value != OVERFLOW_VALUE:
                    self._values[i][value] = self._values[i].get(value, 0) + 1
            if self._scoped is not None and key_t[scoped_at] != OVERFLOW_VALUE:
                in_scope = self._scope_values.setdefault(key_t[:prefix_length], {})
                value = key_t[scoped_at]
                in_scope[value] = in_scope.get(value, 0) + 1
        return cell, tuple(folded)

    def expire(self, now: float) -> int:
        """Drop series idle for longer than the TTL; returns how many went."""
        cutoff = now - self._ttl
        stale = [k for k, cell in self.series.items() if cell[0] < cutoff]
        self._remove(stale)
        # Resolutions may point at dropped cells: start afresh (cheap, rebuilt lazily).
        self._resolved.clear()
        return len(stale)

    def _remove(self, keys: list[tuple[Any, ...]]) -> None:
        """Delete these series and release the label values they held."""
        for key in keys:
            del self.series[key]
            for i, value in enumerate(key):
                if value == OVERFLOW_VALUE:
                    continue
                left = self._values[i][value] - 1
                if left:
                    self._values[i][value] = left
                else:
                    del self._values[i][value]
            if self._scoped is not None:
                self._unscope(key)

    def discard(self, drop: Callable[[tuple[Any, ...]], bool]) -> int:
        """Drop the series whose key `drop` selects (a release pushed out of its window); returns
        how many went."""
        gone = [k for k in self.series if drop(k)]
        self._remove(gone)
        if gone:
            self._resolved.clear()
        return len(gone)

    def _unscope(self, key: tuple[Any, ...]) -> None:
        scoped_at, prefix_length, _ = self._scoped  # type: ignore[misc]
        value = key[scoped_at]
        if value == OVERFLOW_VALUE:
            return
        prefix = key[:prefix_length]
        in_scope = self._scope_values[prefix]
        left = in_scope[value] - 1
        if left:
            in_scope[value] = left
        elif len(in_scope) > 1:
            del in_scope[value]
        else:
            del self._scope_values[prefix]

    def __len__(self) -> int:
        return len(self.series)
