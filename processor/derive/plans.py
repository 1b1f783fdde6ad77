"""Plan tier (and account name) per consumer id, for services whose spans carry no plan tier.

Loaded from a CSV file (`consumer_id,plan_tier[,account]` with a header), a
YAML mapping (`consumer_id: plan_tier` or `consumer_id: {plan_tier, account}`),
or a SQL query against the state database returning the same columns; reloaded
on an interval by the state service.  Lookups swap a whole dict, so the worker
never sees a half-loaded table.  A span's own plan tier always wins.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    import _csv

from .._yaml import safe_load
from ..errors import ProcessorError

__all__ = ["PlanLookup", "PlanLookupError", "MAX_PLAN_FILE_BYTES"]

#: A lookup of a million consumers is ~40 MB of CSV; a file past this is a mistake, refused unread.
MAX_PLAN_FILE_BYTES = 256 << 20
#: Consumers in one lookup (about 400 MB in memory at the limit): 256 MiB of 8-byte rows would
#: otherwise be 30 million entries, over 6 GB.
MAX_PLAN_ENTRIES = 2_000_000


class PlanLookupError(ProcessorError, ValueError):
    """The lookup source is unusable; the message names the file or query and the line."""


class PlanLookup:
    def __init__(self, file: str | None = None, sql: str | None = None) -> None:
        self.file = file
        self.sql = sql
        self.plans: dict[str, str] = {}
        self.accounts: dict[str, str] = {}

    def load(self, query: Callable[[str], list[tuple[Any, ...]]] | None = None) -> int:
        """(Re)load; returns the number of consumers. Raises PlanLookupError."""
        if self.file:
            try:
                plans, accounts = _table(_read_file(Path(self.file)), f"plan lookup file {self.file}")
            except PlanLookupError:
                raise
            except Exception as exc:  # a hand-edited file can fail in ways no list foresees
                raise PlanLookupError(
                    f"cannot load plan lookup file {self.file}: {type(exc).__name__}: {exc}"
                ) from None
        elif self.sql and query is not None:
            # The database returns at most one row past the bound, whatever the query selects.
            bounded = (
                f"SELECT * FROM ({self.sql.strip().rstrip(';')}) AS plan_lookup LIMIT {MAX_PLAN_ENTRIES + 1}"
            )
            try:
                rows = [tuple(str(v) if v is not None else "" for v in r) for r in query(bounded)]
            except Exception as exc:  # the store's error, whatever the backend
                raise PlanLookupError(f"processors.plan_lookup.sql failed: {exc}") from None
            plans, accounts = _table(rows, "processors.plan_lookup.sql")
        else:
            return 0
        self.plans, self.accounts = plans, accounts
        return len(plans)


def _table(rows: Iterable[tuple[str, ...]], where: str) -> tuple[dict[str, str], dict[str, str]]:
    plans: dict[str, str] = {}
    accounts: dict[str, str] = {}
    for n, row in enumerate(rows):
        if n >= MAX_PLAN_ENTRIES:
            raise PlanLookupError(
                f"{where} has more than {MAX_PLAN_ENTRIES} rows; a lookup holds "
                f"at most {MAX_PLAN_ENTRIES} consumers"
            )
        if len(row) < 2 or not row[0] or not row[1]:
            continue
        plans[row[0]] = row[1]
        if len(row) > 2 and row[2]:
            accounts[row[0]] = row[2]
    return plans, accounts


def _read_text(path: Path) -> str:
    """The file's text; only a regular file within MAX_PLAN_FILE_BYTES is read.

    A FIFO put in the file's place would block the reading thread (the state refresh) until
    something writes to it, and /dev/zero would never end: O_NONBLOCK opens either at once and
    fstat says what it is before one byte is read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):  # the words read_text() would have used
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(info.st_mode):
            kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device or socket"
            raise PlanLookupError(f"cannot read plan lookup file {path}: it is {kind}, not a regular file")
        if info.st_size > MAX_PLAN_FILE_BYTES:
            raise PlanLookupError(
                f"plan lookup file {path} is not accepted: {info.st_size} bytes, "
                f"at most {MAX_PLAN_FILE_BYTES} (256 MiB)"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(MAX_PLAN_FILE_BYTES + 1)  # the file may grow after fstat
    finally:
        os.close(fd)
    if len(raw) > MAX_PLAN_FILE_BYTES:
        raise PlanLookupError(
            f"plan lookup file {path} is not accepted: more than {MAX_PLAN_FILE_BYTES} bytes (256 MiB)"
        )
    return raw.decode("utf-8")


def _read_file(path: Path) -> Iterable[tuple[str, ...]]:
    try:
        text = _read_text(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanLookupError(f"cannot read plan lookup file {path}: {exc}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            data = safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise PlanLookupError(f"plan lookup file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise PlanLookupError(f"plan lookup file {path} must map consumer ids to plan tiers")
        rows: list[tuple[str, ...]] = []
        for consumer, value in data.items():
            if isinstance(value, dict):
                rows.append(
                    (str(consumer), str(value.get("plan_tier", "")), str(value.get("account", "") or ""))
                )
            elif value is not None:
                rows.append((str(consumer), str(value)))
        return rows
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or [h.strip() for h in header[:2]] != ["consumer_id", "plan_tier"]:
        raise PlanLookupError(
            f"plan lookup file {path}: the first line must be the header consumer_id,plan_tier[,account]"
        )
    return _csv_rows(reader, path)


def _csv_rows(reader: _csv.Reader, path: Path) -> Iterator[tuple[str, ...]]:
    """Row by row, so a file of 30 million short rows is refused at the bound, not built."""
    try:
        for row in reader:
            if row:
                yield tuple(c.strip() for c in row)
    except csv.Error as exc:  # e.g. a field over csv.field_size_limit() (128 KiB)
        raise PlanLookupError(f"plan lookup file {path}, line {reader.line_num}: {exc}") from None
