"""The consumer report as stored for the other replicas: zlib-compressed JSON, exact both ways.

The replica that computes the consumer metrics (processor/state/lease.py) writes each report
it builds to the `report_snapshot` table (one row, replaced each time, with a version that
grows); the others read it instead of computing, so every replica exposes the same values,
and a restarted processor exposes its last report until its first refresh is over.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import fields

from ..errors import ProcessorError
from .report import ConsumerReport

__all__ = ["SnapshotError", "dumps", "loads", "FORMAT", "PUBLISH_SQL", "SELECT_SQL"]

FORMAT = 1
_MAX_BYTES = 256 << 20  # decompressed; a report is a few MiB even at the label limits

# `version` grows by one at each write: a follower reloads only what it has not seen.
PUBLISH_SQL = """
INSERT INTO report_snapshot (id, version, generated_ms, written_ms, writer, report)
VALUES (1, 1, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    version = report_snapshot.version + 1,
    generated_ms = excluded.generated_ms,
    written_ms = excluded.written_ms,
    writer = excluded.writer,
    report = excluded.report
"""
SELECT_SQL = "SELECT version, generated_ms, writer, report FROM report_snapshot WHERE id = 1"

# Fields whose values are not plain numbers: (bucket counts, sum, count) and (values, series).
_TTFS = "ttfs"
_FOLDED = "folded"


class SnapshotError(ProcessorError):
    """A stored report that this apiusage cannot read (damaged, or from a newer version)."""


def dumps(report: ConsumerReport) -> bytes:
    """The report as compressed JSON; label tuples become lists, values keep int or float."""
    doc: dict = {"format": FORMAT, "generated_ms": report.generated_ms}
    for f in fields(ConsumerReport):
        if f.name == "generated_ms":
            continue
        values = getattr(report, f.name)
        # Sorted: the same report gives the same bytes on every replica and every run.
        doc[f.name] = [[list(key), _dump_value(f.name, value)] for key, value in sorted(values.items())]
    return zlib.compress(json.dumps(doc, separators=(",", ":"), allow_nan=True).encode(), 6)


def _dump_value(name: str, value) -> object:  # noqa: ANN001 - one of three shapes, see below
    if name == _TTFS:
        counts, total, count = value
        return [list(counts), total, count]
    if name == _FOLDED:
        return list(value)
    return value


def loads(data: bytes) -> ConsumerReport:
    """The report `dumps()` wrote; raises SnapshotError for anything else."""
    try:
        text = zlib.decompressobj().decompress(bytes(data), _MAX_BYTES)
        doc = json.loads(text)
    except (zlib.error, ValueError, TypeError) as exc:
        raise SnapshotError(f"stored consumer report is not readable: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise SnapshotError(
            f"stored consumer report has format {got!r}, this apiusage reads "
            f"format {FORMAT}; run the same apiusage version on every replica"
        )
    report = ConsumerReport(generated_ms=_int(doc.get("generated_ms"), "generated_ms"))
    for f in fields(ConsumerReport):
        if f.name == "generated_ms":
            continue
        rows = doc.get(f.name, [])
        if not isinstance(rows, list):
            raise SnapshotError(f"stored consumer report: {f.name} is not a list")
        out = {}
        for row in rows:
            if not (
                isinstance(row, list)
                and len(row) == 2
                and isinstance(row[0], list)
                and all(isinstance(k, str) for k in row[0])
            ):
                raise SnapshotError(f"stored consumer report: malformed entry in {f.name}: {row!r:.200}")
            out[tuple(row[0])] = _load_value(f.name, row[1])
        setattr(report, f.name, out)
    return report


def _load_value(name: str, value) -> object:  # noqa: ANN001
    if name == _TTFS:
        if not (isinstance(value, list) and len(value) == 3 and isinstance(value[0], list)):
            raise SnapshotError(f"stored consumer report: malformed histogram {value!r:.200}")
        counts, total, count = value
        return ([_int(n, name) for n in counts], float(_number(total, name)), _int(count, name))
    if name == _FOLDED:
        if not (isinstance(value, list) and len(value) == 2):
            raise SnapshotError(f"stored consumer report: malformed folding entry {value!r:.200}")
        return (_int(value[0], name), _int(value[1], name))
    return _number(value, name)


def _number(value, name: str) -> int | float:  # noqa: ANN001
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SnapshotError(f"stored consumer report: {name} has a non-number {value!r:.100}")
    return value


def _int(value, name: str) -> int:  # noqa: ANN001
    if isinstance(value, bool) or not isinstance(value, int):
        raise SnapshotError(f"stored consumer report: {name} has a non-integer {value!r:.100}")
    return value
