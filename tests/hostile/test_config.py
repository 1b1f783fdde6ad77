"""Hostile and faulty config files (issue 12 item 19): one clear error with the key path, exit 2.

In-process for the tables (load_config on a real file), through `apiusage serve --config`
as a subprocess for a sample, with its peak RSS and wall time measured.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, get_type_hints

import pytest
from apiusage.processor._typedload import Duration
from apiusage.processor.config import Config, ConfigError, load_config

from tests.support.cli_run import run_apiusage

# The classic "billion laughs": 342 bytes, nine levels of nine aliases = 9**9 strings once walked.
LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)
HUGE_INT = "9" * 5000
DUP = (
    "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: localhost:4317\n"
    "        endpoint: 0.0.0.0:4317\n"
)
TOO_MANY = "exporters:\n  prometheus:\n    histogram_buckets: [" + "1, " * 10_001 + "]\n"

# (case id, file content, exact ConfigError text); the file is c.yaml in the working directory.
YAML_CASES: list[tuple[str, str | bytes, str]] = [
    (
        "billion-laughs",
        LAUGHS,
        "c.yaml is not accepted at line 5, column 8: aliases add more than 10000 values (alias *d)",
    ),
    (
        "alias-in-its-own-anchor",
        "catalog: &a [*a]\n",
        "c.yaml is not accepted at line 1, column 14: alias *a is inside its own anchor",
    ),
    (
        "alias-expands-past-64-levels",
        "catalog: &a [[[1]]]\nadmin: " + "[" * 62 + "*a" + "]" * 62,
        "c.yaml is not accepted at line 2, column 70: nested deeper than 64 levels",
    ),
    (
        "20000-deep-flow-sequences",
        "[" * 20_000,
        "c.yaml is not accepted at line 1, column 65: nested deeper than 64 levels",
    ),
    (
        "20000-deep-flow-mappings",
        "{a: " * 20_000,
        "c.yaml is not accepted at line 1, column 257: nested deeper than 64 levels",
    ),
    (
        "20000-deep-block-sequences",
        "- " * 20_000 + "x\n",
        "c.yaml is not accepted at line 1, column 129: nested deeper than 64 levels",
    ),
    (
        "5000-digit-int",
        f"processors:\n  queue:\n    max_spans: {HUGE_INT}\n",
        "c.yaml is not accepted at line 3, column 16: processors.queue.max_spans: an integer of 5000 "
        "characters (at most 100)",
    ),
    (
        "70000-character-value",
        "catalog: " + "x" * 70_000 + "\n",
        "c.yaml is not accepted at line 1, column 10: catalog: a value of 70000 characters (at most 65536)",
    ),
    ("10001-values", TOO_MANY, "c.yaml is not accepted at line 3, column 30004: more than 10000 values"),
    (
        "duplicate-key",
        DUP,
        "c.yaml is not valid YAML at line 6, column 9: duplicate key "
        "receivers.otlp.protocols.grpc.endpoint (first at line 5)",
    ),
    (
        "duplicate-section",
        "state: {}\nadmin: {}\nstate: {enabled: false}\n",
        "c.yaml is not valid YAML at line 3, column 1: duplicate key state (first at line 1)",
    ),
    (
        "impossible-date",
        "processors:\n  plan_lookup:\n    file: 2026-02-30\n",
        "c.yaml is not valid YAML at line 3, column 11: cannot read '2026-02-30': day is out of range "
        "for month",
    ),
    (
        "binary-png",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        "c.yaml is not UTF-8 text: invalid start byte at byte 0",
    ),
    (
        "binary-elf",
        b"\x7fELF\x02\x01\x01\x00",
        "c.yaml is not valid YAML at line 1, column 1: unacceptable character #x007f: special "
        "characters are not allowed",
    ),
    (
        "nul-byte",
        "catalog: x\nadmin: \x00\n",
        "c.yaml is not valid YAML at line 2, column 8: unacceptable character #x0000: special "
        "characters are not allowed",
    ),
    (
        "invalid-utf8",
        b"catalog: caf\xe9.yaml\n",
        "c.yaml is not UTF-8 text: invalid continuation byte at byte 12",
    ),
]


EXPECTED = {case: message for case, _, message in YAML_CASES}


def _write(tmp_path: Path, content: str | bytes, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | bytes) -> str:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, content)
    with pytest.raises(ConfigError) as info:
        load_config("c.yaml")
    return str(info.value)


@pytest.mark.parametrize(("content", "expected"), [c[1:] for c in YAML_CASES], ids=[c[0] for c in YAML_CASES])
def test_hostile_yaml_is_one_error_with_where(tmp_path, monkeypatch, content, expected) -> None:
    start = time.monotonic()
    assert _error(tmp_path, monkeypatch, content) == expected
    assert time.monotonic() - start < 5


def _numeric_paths(cls: type, prefix: str, want: type) -> list[str]:
    """Key paths of every field of type `want` in the schema, so a new field is covered too."""
    out = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        inner = [a for a in getattr(tp, "__args__", ()) if dataclasses.is_dataclass(a)]
        target = tp if dataclasses.is_dataclass(tp) else (inner[0] if inner else None)
        if target is not None:
            out += _numeric_paths(target, f"{prefix}{f.name}.", want)
        elif tp is want:
            out.append(prefix + f.name)
    return out


DURATION_PATHS = _numeric_paths(Config, "", Duration)
# Sections that need a sibling to be valid at all, so the expected text is only the one line.
_REQUIRED = {"exporters.otlp": {"endpoint": "http://127.0.0.1:4318"}}


def _yaml_for(path: str, value: str) -> str:
    """`a.b.c` and `.inf` as nested block YAML, plus what the section itself requires."""
    parts = path.split(".")
    lines = []
    for depth, key in enumerate(parts[:-1]):
        lines.append("  " * depth + f"{key}:")
        for extra_key, extra in _REQUIRED.get(".".join(parts[: depth + 1]), {}).items():
            lines.append("  " * (depth + 1) + f"{extra_key}: {extra}")
    lines.append("  " * (len(parts) - 1) + f"{parts[-1]}: {value}")
    return "\n".join(lines) + "\n"


def test_every_duration_key_is_in_the_table() -> None:
    # Guards the table below: the schema walk finds each of the documented duration keys.
    assert DURATION_PATHS == [
        "receivers.otlp.protocols.grpc.receive_timeout",
        "receivers.otlp.protocols.grpc.max_connection_idle",
        "receivers.otlp.protocols.http.header_timeout",
        "receivers.otlp.protocols.http.body_timeout",
        "receivers.otlp.protocols.http.idle_timeout",
        "processors.queue.retry_after",
        "processors.queue.shutdown_timeout",
        "processors.usage.data_quality.max_future_skew",
        "processors.usage.data_quality.max_past_age",
        "processors.limits.series_ttl",
        "processors.plan_lookup.refresh_interval",
        "processors.memory_limiter.check_interval",
        "processors.experiment_join.ttl",
        "exporters.otlp.timeout",
        "state.flush_interval",
        "state.refresh_interval",
        "state.experiment_checks_interval",
    ]


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", ".NaN", "-.Inf"])
@pytest.mark.parametrize("path", DURATION_PATHS)
def test_non_finite_duration_names_its_key(tmp_path, monkeypatch, path, value) -> None:
    shown = {".inf": "inf", "-.inf": "-inf", ".nan": "nan", ".NaN": "nan", "-.Inf": "-inf"}[value]
    assert _error(tmp_path, monkeypatch, _yaml_for(path, value)) == (
        f"c.yaml is invalid:\n  {path}: must be a finite duration (got float {shown})"
    )


# (key path, YAML value, the one problem line after "path: ")
BOUNDS_CASES = [
    (
        "receivers.otlp.protocols.grpc.max_recv_msg_size_mib",
        "2048",
        "must be at most 2047 (gRPC takes messages below 2 GiB) (got 2048)",
    ),
    ("receivers.otlp.protocols.grpc.max_recv_msg_size_mib", "0", "must be > 0"),
    (
        "receivers.otlp.protocols.grpc.max_concurrent_streams",
        "2147483648",
        "must be at most 2147483647 (got 2147483648)",
    ),
    (
        "receivers.otlp.protocols.http.max_request_body_size",
        "2GiB",
        "must be at most 2047MiB (protobuf parses messages below 2 GiB) (got 2048MiB)",
    ),
    ("receivers.otlp.protocols.http.max_request_body_size", "0", "must be > 0"),
    (
        "receivers.otlp.protocols.http.max_request_body_size",
        f"'{'9' * 5000}KiB'",
        "must be a size in bytes or like 512KiB, 64MiB (got str '9999999999999999999999999999999999999"
        "999'… (5003 characters))",
    ),
    ("receivers.otlp.protocols.http.max_connections", "-1", "must be > 0"),
    ("processors.queue.max_spans", "0", "must be > 0 (got 0)"),
    ("processors.queue.max_spans", "1" + "0" * 99, "must be at most 2147483647 (got 1" + "0" * 99 + ")"),
    ("processors.queue.retry_after", "0.5", "must be at least 1s (Retry-After counts seconds)"),
    ("processors.queue.shutdown_timeout", "36501d", "must be at most 36500d (got 36501d)"),
    ("processors.queue.shutdown_timeout", "1.0e+300", "must be at most 36500d (got 1e+300s)"),
    (
        "processors.limits.series_ttl",
        f"{'9' * 5000}s",
        "must be a duration such as 30s, 15m, 1h or 7d (got str '9999999999999999999999999999999999999"
        "999'… (5001 characters))",
    ),
    ("processors.limits.max_label_length", "7", "must be at least 8"),
    ("processors.limits.default_max_label_values", "0", "must be > 0"),
    ("processors.limits.max_label_values.route", "2147483648", "must be at most 2147483647 (got 2147483648)"),
    ("processors.memory_limiter.check_interval", "1ms", "must be at least 10ms"),
    ("processors.memory_limiter.limit_mib", "2147483648", "must be at most 2147483647 (got 2147483648)"),
    ("exporters.otlp.timeout", "0", "must be > 0s"),
    ("exporters.otlp.max_queue_requests", "0", "must be > 0"),
    (
        "exporters.prometheus.endpoint",
        "localhost:65536",
        "must be host:port, such as localhost:4317 (got 'localhost:65536')",
    ),
    (
        "exporters.prometheus.endpoint",
        "localhost:²",
        "must be host:port, such as localhost:4317 (got 'localhost:²')",
    ),
    (
        "exporters.prometheus.endpoint",
        f"'localhost:{'1' * 5000}'",
        "must be host:port, such as localhost:4317 (got 'localhost:" + "1" * 5000 + "')",
    ),
    (
        "exporters.prometheus.histogram_buckets",
        "[0.1, .nan]",
        "bounds must be finite and > 0; +Inf is added for you (got [0.1, nan])",
    ),
    ("state.retention_days", "34", "must be at least 35: churn risk looks back 5 weeks (got 34)"),
    ("state.retention_days", "36501", "must be at most 36500 (got 36501)"),
    ("state.max_pending_rows", "0", "must be > 0"),
    ("state.flush_interval", "50ms", "must be at least 100ms"),
]


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    BOUNDS_CASES,
    ids=[f"{c[0].rsplit('.', 1)[-1]}={c[1][:12]}" for c in BOUNDS_CASES],
)
def test_out_of_range_number_names_its_key(tmp_path, monkeypatch, path, value, problem) -> None:
    assert _error(tmp_path, monkeypatch, _yaml_for(path, value)) == (
        f"c.yaml is invalid:\n  {path}: {problem}"
    )


def test_largest_allowed_values_are_accepted(tmp_path) -> None:
    config = load_config(
        _write(
            tmp_path,
            (
                "receivers:\n  otlp:\n    protocols:\n      grpc: {max_recv_msg_size_mib: 2047}\n"
                "      http: {max_request_body_size: 2047MiB}\nstate: {retention_days: 36500}\n"
                "processors:\n  queue: {shutdown_timeout: 36500d, max_spans: 2147483647}\n"
            ),
        )
    )
    assert config.receivers.otlp.protocols.grpc.max_recv_msg_size_mib == 2047
    assert config.receivers.otlp.protocols.http.max_request_body_size == 2047 << 20
    assert config.state.retention_days == 36500
    assert config.processors.queue.shutdown_timeout == 36500 * 86400.0
    assert config.processors.queue.max_spans == 2147483647


def test_anchors_and_merge_keys_still_work(tmp_path) -> None:
    config = load_config(
        _write(
            tmp_path,
            (
                "receivers:\n  otlp:\n    protocols:\n"
                "      grpc: &proto {endpoint: '127.0.0.1:0'}\n"
                "      http:\n        <<: *proto\n        max_connections: 7\n"
            ),
        )
    )
    assert config.receivers.otlp.protocols.grpc.endpoint == "127.0.0.1:0"
    assert config.receivers.otlp.protocols.http.endpoint == "127.0.0.1:0"
    assert config.receivers.otlp.protocols.http.max_connections == 7


def test_hostile_yaml_in_an_environment_variable_stays_a_string(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("APIUSAGE_TEST_HOSTILE", "[" * 20_000)
    text = "processors:\n  queue:\n    max_spans: ${env:APIUSAGE_TEST_HOSTILE}\n"
    assert _error(tmp_path, monkeypatch, text) == (
        "c.yaml is invalid:\n  processors.queue.max_spans: must be an integer "
        "(got str '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[['… (20000 characters))"
    )


def test_empty_file_is_the_embedded_defaults(tmp_path) -> None:
    assert load_config(_write(tmp_path, b"")) == load_config(None)
    assert load_config(_write(tmp_path, "# only a comment\n")) == load_config(None)


def test_directory_as_config(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf.d").mkdir()
    with pytest.raises(ConfigError) as info:
        load_config("conf.d")
    assert str(info.value) == "cannot read config file conf.d: Is a directory"


def test_a_1_gib_file_is_refused_unread(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "c.yaml", "wb") as f:
        f.truncate(1 << 30)  # sparse: no disk used
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_config("c.yaml")
    assert time.monotonic() - start < 1
    assert str(info.value) == (
        "c.yaml is not accepted: a config file is at most 1048576 bytes "
        "(1 MiB); this one has 1073741824 bytes"
    )


def test_a_device_past_1_mib_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("/dev/zero")
    assert str(info.value) == (
        "/dev/zero is not accepted: a config file is at most 1048576 bytes "
        "(1 MiB); this one has more than that"
    )


# Through the real CLI: (case id, file content or None for a directory, the one stderr line).
CLI_CASES: list[tuple[str, Any, str]] = [
    ("billion-laughs", LAUGHS, EXPECTED["billion-laughs"]),
    ("20000-deep", "[" * 20_000, "c.yaml is not accepted at line 1, column 65: nested deeper than 64 levels"),
    ("5000-digit-int", f"processors:\n  queue:\n    max_spans: {HUGE_INT}\n", EXPECTED["5000-digit-int"]),
    (
        "inf-duration",
        "processors:\n  queue:\n    shutdown_timeout: .inf\n",
        "c.yaml is invalid:\n  processors.queue.shutdown_timeout: must be a finite duration (got float inf)",
    ),
    (
        "nan-retry-after",
        "processors:\n  queue:\n    retry_after: .nan\n",
        "c.yaml is invalid:\n  processors.queue.retry_after: must be a finite duration (got float nan)",
    ),
    (
        "2048-mib",
        _yaml_for("receivers.otlp.protocols.grpc.max_recv_msg_size_mib", "2048"),
        "c.yaml is invalid:\n  receivers.otlp.protocols.grpc.max_recv_msg_size_mib: must be at most 2047 "
        "(gRPC takes messages below 2 GiB) (got 2048)",
    ),
    ("duplicate-key", DUP, EXPECTED["duplicate-key"]),
    ("directory", None, "cannot read config file c.yaml: Is a directory"),
]


@pytest.mark.slow  # one `apiusage serve` process per case
@pytest.mark.parametrize(("content", "expected"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_serve_prints_one_error_and_exits_2(tmp_path, content, expected) -> None:
    if content is None:
        (tmp_path / "c.yaml").mkdir()
    else:
        _write(tmp_path, content)
    run = run_apiusage(["serve", "--config", "c.yaml"], tmp_path)
    assert (run.returncode, run.stdout, run.stderr) == (2, "", f"apiusage: {expected}\n")
    # Bounded before anything big is built: the whole process, Python and gRPC included.
    assert run.peak_rss_bytes < 200 << 20, f"peak RSS {run.peak_rss_bytes >> 20} MiB"
    assert run.seconds < 5


# The other user-written YAML files read at start-up go through the same loader.
def test_plan_lookup_yaml_refuses_a_duplicate_consumer(tmp_path) -> None:
    from apiusage.processor.derive.plans import PlanLookup, PlanLookupError

    path = _write(tmp_path, "c1: free\nc2: pro\nc1: enterprise\n", "plans.yaml")
    with pytest.raises(PlanLookupError) as info:
        PlanLookup(str(path)).load()
    assert str(info.value) == (
        f"plan lookup file {path} is not valid YAML: duplicate key c1 (first at line 1) at line 3, column 1"
    )


def test_catalog_refuses_a_duplicate_service(tmp_path) -> None:
    from apiusage.instrumentation.catalog import CatalogError, load_catalog

    path = _write(tmp_path, "services:\n  a:\n    endpoints: []\n  a:\n    endpoints: []\n", "catalog.yaml")
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert str(info.value) == (
        f"{path}: not valid YAML at line 4, column 3: duplicate key services.a (first at line 2)"
    )


def test_slo_file_refuses_20000_deep_nesting(tmp_path) -> None:
    from apiusage.rules.slo import SloError, load_slo

    path = _write(tmp_path, "[" * 20_000, "slo.yaml")
    with pytest.raises(SloError) as info:
        load_slo(path)
    assert str(info.value) == f"{path} is not valid YAML: nested deeper than 64 levels at line 1, column 65"
