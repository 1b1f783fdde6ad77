"""`apiusage demo`: start the processor, the demo API, traffic, Prometheus and Alertmanager; show it.

Order of start-up: the processor; then, while the demo API (release 1.4.2) and Alertmanager start,
the backfill of simulated history; then Prometheus (after the backfill, so its
first scrape already holds the history's counters and rates stay flat) and the
traffic generator. Order of shutdown is the reverse, the processor last so that it
drains and stores what the others sent. Every child runs in its own process group
(see ``children``).

The demo API listens on a socket the demo opens and hands to it (uvicorn ``--fd``), so that
``--release-after`` seconds in, release 1.5.0 can start on the same socket while 1.4.2 still
answers; once 1.5.0 answers, 1.4.2 stops (a rolling restart: the traffic sees no gap).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from .. import CATALOG, EXPERIMENTS, PLANS, PSEUDONYM_KEY, RELEASES, SERVICE_NAME, release_environment
from .children import Child, ChildError, wait_until
from .ports import HOST, PORTS, PortError, claim

if TYPE_CHECKING:  # for the annotations: imported only when they run
    from .backfill import Backfill
    from .stack import AlertSink

__all__ = ["run"]

STORY_SECONDS = 1200.0  # one run of the traffic generator: joins, migrations, then a new one
START_TIMEOUT = 60.0


class DemoError(Exception):
    """The demo cannot go on; the message says why (and which log to read)."""


def _say(text: str = "", end: str = "\n") -> None:
    """Print, and keep going when nobody reads any more (`apiusage demo | head`): the demo must
    still stop its children and remove its folder."""
    try:
        sys.stdout.write(text + end)
        sys.stdout.flush()
    except (BrokenPipeError, ValueError, OSError):
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # later writes and the exit flush go nowhere
        except (OSError, ValueError):
            pass


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _has_ui(alertmanager_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{alertmanager_url}/", timeout=2) as response:
            return b"does not include a web" not in response.read(4096)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _bin(name: str) -> str | None:
    """An executable of this virtualenv, else from PATH."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else shutil.which(name)


def _version(url: str) -> str | None:
    """The release that answered the demo API's /healthz, or None."""
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
            return str(json.load(response).get("version"))
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        return None


def write_experiments(folder: Path, today: dt.date) -> Path:
    """<run>/experiments.yaml, the processor's: the packaged protocol with `start` the day the run
    began (the experiment starts with the live traffic). A reused --dir keeps its own file."""
    from apiusage.conventions.experiments import ExperimentsError, load_experiments, parse_experiments

    target = folder / "experiments.yaml"
    try:
        if target.exists():
            load_experiments(target)
            return target
        data = yaml.safe_load(EXPERIMENTS.read_text(encoding="utf-8"))
        for body in data["experiments"].values():
            body["start"] = today.isoformat()
        parse_experiments(data, str(target))
    except ExperimentsError as exc:
        raise DemoError(f"the experiments file cannot be used: {exc}") from None
    target.write_text(
        f"# Written by apiusage demo from {EXPERIMENTS.name} (start: the first day of this run).\n"
        + yaml.safe_dump(data, sort_keys=False),
        encoding="utf-8",
    )
    return target


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APIUSAGE_"))}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stopping = threading.Event()
        self.hurry = False
        self.children: list[Child] = []
        self.traffic: Child | None = None
        self.api: Child | None = None
        self.api_version = RELEASES[0]
        self.api_socket: socket.socket | None = None
        self.cycle = 0
        self.sink: AlertSink | None = None
        self.tty = sys.stdout.isatty()

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum: int, frame: object) -> None:
        if self.stopping.is_set():
            self.hurry = True  # a second Ctrl-C: stop without waiting for graceful exits
            return
        self.stopping.set()

    # ------------------------------------------------------------------ checks
    def _requirements(self) -> tuple[str, str]:
        def importable(module: str) -> bool:
            try:
                return importlib.util.find_spec(module) is not None
            except ImportError:  # a dotted name whose parent is missing
                return False

        missing = [
            m
            for m in (
                "fastapi",
                "uvicorn",
                "httpx",
                "opentelemetry.instrumentation",
                "prometheus_client",
                "opentelemetry.proto",
                "openfeature",
                "openfeature.contrib.hook.opentelemetry",
            )
            if not importable(m)
        ]
        instrument, uvicorn = _bin("opentelemetry-instrument"), _bin("uvicorn")
        if missing or instrument is None or uvicorn is None:
            what = ", ".join(missing) if missing else "opentelemetry-instrument/uvicorn commands"
            raise DemoError(
                f"the demo needs {what}; install with: pip install 'apiusage[demo]' (make demo does)"
            )
        self.instrument, self.uvicorn = instrument, uvicorn
        return instrument, uvicorn

    def _monitoring(self) -> tuple[str | None, str | None]:
        if self.args.no_prometheus:
            _say("Prometheus and Alertmanager: off (--no-prometheus)")
            return None, None
        prometheus = shutil.which("prometheus")
        alertmanager = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if prometheus is None:
            _say(
                "Prometheus is not on the PATH, so no rules are evaluated and no alerts fire; the rest "
                "runs.\n  To get them: sudo apt-get install prometheus prometheus-alertmanager "
                "(Debian, Ubuntu) or see README.md"
            )
            return None, None
        if alertmanager is None:
            _say(
                "Alertmanager is not on the PATH: alerts fire in Prometheus but are not routed.\n"
                "  To get it: sudo apt-get install prometheus-alertmanager (Debian, Ubuntu)"
            )
        return prometheus, alertmanager

    # ------------------------------------------------------------------ children
    def _start(self, child: Child) -> Child:
        self.children.append(child)
        child.start()
        return child

    def _wait_ready(self, child: Child, url: str, what: str) -> None:
        ok = wait_until(
            lambda: self.stopping.is_set() or _http_ok(url), START_TIMEOUT, 0.2, while_running=child
        )
        if self.stopping.is_set():
            return
        if not ok:
            status = child.exit_status()
            why = (
                f"exited with status {status}"
                if status is not None
                else f"did not answer {url} within {START_TIMEOUT:.0f} s"
            )
            raise DemoError(f"{what} {why}; its log, {child.log_path}, ends with:\n{child.log_tail()}")

    def _api_child(self, folder: Path, version: str) -> Child:
        """The demo API as release `version`, on the demo's listening socket (opened on first use)."""
        if self.api_socket is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, self.ports["api_port"]))
            except OSError as exc:
                sock.close()
                raise DemoError(
                    f"port {self.ports['api_port']} for the demo API: {exc.strerror or exc}; "
                    "choose another with --api-port PORT (0 picks a free one)"
                ) from None
            sock.listen(1024)
            self.api_socket = sock
        fd = self.api_socket.fileno()
        p = self.ports
        self.api_version = version
        self.api = Child(
            "demo API",
            [
                self.instrument,
                self.uvicorn,
                "apiusage.demo.app:app",
                "--fd",
                str(fd),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            folder / "logs" / "api.log",
            _child_env(
                {
                    "OTEL_SERVICE_NAME": SERVICE_NAME,
                    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{HOST}:{p['otlp_grpc_port']}",
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                    "OTEL_BSP_SCHEDULE_DELAY": "1000",
                    "OTEL_BLRP_SCHEDULE_DELAY": "1000",
                    "APIUSAGE_PSEUDONYM_KEY": PSEUDONYM_KEY,
                    "APIUSAGE_PLAN_TIERS": str(PLANS),
                    "APIUSAGE_CATALOG": str(CATALOG),
                    # Feedback events are OTLP log records (the processor takes logs too); the
                    # traffic plays a CDN in front of the service and sets the header; the
                    # resource says which release runs (service.version).
                    **release_environment(version),
                }
            ),
            pass_fds=(fd,),
        )
        return self.api

    def _roll_out(self, folder: Path, version: str) -> None:
        """Start `version` on the same socket, wait until it answers, then stop the old one."""
        old, was = self.api, self.api_version
        assert old is not None
        url = f"http://{HOST}:{self.ports['api_port']}"
        _say(f"release: rolling out {SERVICE_NAME} {version} (rolling restart on {url})")
        began = time.monotonic()
        new = self._api_child(folder, version)
        self.children[self.children.index(old)] = new  # the same place in the shutdown order
        new.start()
        # Both accept on the socket: a few answers of /healthz from the new release say it is up.
        ok = wait_until(
            lambda: self.stopping.is_set() or _version(url) == version, START_TIMEOUT, 0.2, while_running=new
        )
        if self.stopping.is_set():
            old.stop(timeout=10.0)
            return
        if not ok:
            status = new.exit_status()
            why = f"exited with status {status}" if status is not None else "did not answer in time"
            new.stop(timeout=5.0)
            # The demo goes on with the old release (and shutdown stops it).
            self.children[self.children.index(new)], self.api, self.api_version = old, old, was
            _say(
                f"release: {version} of the demo API {why}, {was} goes on serving; its log, "
                f"{new.log_path}, ends with:\n{new.log_tail()}"
            )
            return
        overlap = time.monotonic() - began
        status = old.stop(timeout=10.0)  # uvicorn finishes what it accepted, then exits
        _say(
            f"release: {SERVICE_NAME} {version} answers (started in {overlap:.1f} s while "
            f"{was} went on serving); {was} stopped"
            + ("" if status in (0, None, -signal.SIGTERM, 143) else f" with status {status}")
        )

    def _start_traffic(self, folder: Path) -> None:
        a = self.args
        story = min(a.duration, STORY_SECONDS) if a.duration else STORY_SECONDS
        seed = a.seed + self.cycle
        self.cycle += 1
        argv = [
            sys.executable,
            "-m",
            "apiusage.demo.traffic",
            "--target",
            f"http://{HOST}:{self.ports['api_port']}",
            "--duration",
            f"{story:g}",
            "--rate",
            f"{a.rate:g}",
            "--seed",
            str(seed),
            "--plans",
            str(PLANS),
            "--max-requests",
            "10000000",
        ]
        if a.burst_every:
            argv += ["--burst-every", f"{a.burst_every:g}"]
        if self.traffic in self.children:
            self.children.remove(self.traffic)
        self.traffic = self._start(
            Child("traffic generator", argv, folder / "logs" / "traffic.log", _child_env({}))
        )

    # ------------------------------------------------------------------ run
    def run(self) -> int:
        a = self.args
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        instrument, uvicorn = self._requirements()
        prometheus, alertmanager = self._monitoring()
        skip = set()
        if prometheus is None:
            skip |= {"prometheus_port", "alertmanager_port"}
        elif alertmanager is None:
            skip.add("alertmanager_port")
        self.ports = claim({p.name: getattr(a, p.name) for p in PORTS}, skip)
        if a.dir:
            folder = Path(a.dir).resolve()
            folder.mkdir(parents=True, exist_ok=True)
            temporary = False
        else:
            folder = Path(tempfile.mkdtemp(prefix="apiusage-demo-"))
            temporary = True
        try:
            return self._run(folder, temporary, instrument, uvicorn, prometheus, alertmanager)
        except (DemoError, ChildError) as exc:
            print(f"apiusage demo: {exc}", file=sys.stderr, flush=True)
            return 1
        finally:
            self._shutdown()
            if temporary:
                shutil.rmtree(folder, ignore_errors=True)

    def _run(
        self,
        folder: Path,
        temporary: bool,
        instrument: str,
        uvicorn: str,
        prometheus: str | None,
        alertmanager: str | None,
    ) -> int:
        a, p = self.args, self.ports
        state = folder / "state.db"
        had_history = state.exists()
        _say(
            f"apiusage demo: state and logs in {folder}"
            + (" (removed at exit; --dir keeps them)" if temporary else "")
        )

        # 1. The processor.
        experiments = write_experiments(folder, dt.datetime.now(dt.timezone.utc).date())
        config = folder / "apiusage.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "receivers": {
                        "otlp": {
                            "protocols": {
                                "grpc": {"endpoint": f"{HOST}:{p['otlp_grpc_port']}"},
                                "http": {"endpoint": f"{HOST}:{p['otlp_http_port']}"},
                            }
                        }
                    },
                    "exporters": {"prometheus": {"endpoint": f"{HOST}:{p['metrics_port']}"}},
                    "catalog": str(CATALOG),
                    "experiments": str(experiments),
                    # History is expected here: spans of the backfill are not a data-quality problem.
                    "processors": {"usage": {"data_quality": {"max_past_age": f"{a.history_days + 2}d"}}},
                    "state": {
                        "sqlite": {"path": str(state)},
                        "flush_interval": "2s",
                        "refresh_interval": "5s",
                    },
                },
                sort_keys=False,
            ),
            encoding="utf-8",
        )
        metrics = f"http://{HOST}:{p['metrics_port']}"
        processor = self._start(
            Child(
                "processor",
                [sys.executable, "-m", "apiusage.cli", "serve", "--config", str(config)],
                folder / "logs" / "processor.log",
                _child_env({}),
            )
        )
        self._wait_ready(processor, f"{metrics}/readyz", "the processor")

        # 2. Alertmanager and the demo API start while the history is sent.
        api_url = f"http://{HOST}:{p['api_port']}"
        api = self._start(self._api_child(folder, RELEASES[0]))
        am_url = None
        rules_note = ""
        if prometheus is not None:
            from .stack import AlertSink, bundled, write_alertmanager_config

            files = bundled(Path(a.rules_dir) if a.rules_dir else None)
            if alertmanager is not None:
                sink = self.sink = AlertSink()
                sink.start()
                am_url = f"http://{HOST}:{p['alertmanager_port']}"
                how = write_alertmanager_config(folder / "alertmanager.yml", files.alertmanager, sink.url)
                rules_note = f"; Alertmanager uses {how}"
                self._start(
                    Child(
                        "Alertmanager",
                        [
                            alertmanager,
                            f"--config.file={folder / 'alertmanager.yml'}",
                            f"--storage.path={folder / 'alertmanager'}",
                            f"--web.listen-address={HOST}:{p['alertmanager_port']}",
                            f"--web.external-url={am_url}/",
                            "--cluster.listen-address=",
                            "--log.level=warn",
                        ],
                        folder / "logs" / "alertmanager.log",
                        _child_env({}),
                    )
                )

        # 3. History, for the processor and for Prometheus.
        history = None
        if a.history_days > 0 and not had_history and not self.stopping.is_set():
            history = self._backfill(f"{HOST}:{p['otlp_http_port']}", metrics)
        elif had_history:
            _say(f"history: keeping what {state} already holds")
        if history is not None and prometheus is not None and not self.stopping.is_set():
            self._prometheus_history(history, folder / "prometheus", files.job, f"{HOST}:{p['metrics_port']}")

        # 4. Prometheus, then traffic.
        prom_url = None
        if prometheus is not None and not self.stopping.is_set():
            from .stack import write_prometheus_config, write_rules

            rules, alerts = write_rules(files.rules, folder / "rules", f"{metrics}/runbooks/")
            if not rules:
                _say("no rule files found (alert_rules/ or --rules-dir): Prometheus runs without rules")
            write_prometheus_config(
                folder / "prometheus.yml",
                job=files.job,
                metrics_port=p["metrics_port"],
                rules_glob=str(folder / "rules" / "*.yml") if rules else None,
                alertmanager_port=p["alertmanager_port"] if am_url else None,
            )
            prom_url = f"http://{HOST}:{p['prometheus_port']}"
            prom = self._start(
                Child(
                    "Prometheus",
                    [
                        prometheus,
                        f"--config.file={folder / 'prometheus.yml'}",
                        f"--storage.tsdb.path={folder / 'prometheus'}",
                        f"--web.listen-address={HOST}:{p['prometheus_port']}",
                        f"--web.external-url={prom_url}/",
                        # Keep the backfilled weeks (the default keeps 15 days).
                        f"--storage.tsdb.retention.time={max(15, a.history_days + 7)}d",
                        "--log.level=warn",
                    ],
                    folder / "logs" / "prometheus.log",
                    _child_env({}),
                )
            )
            rules_note = f"{alerts} alerts from {len(rules)} rule files{rules_note}"
            self._wait_ready(prom, f"{prom_url}/-/ready", "Prometheus")
        for child in self.children:
            if child.name == "Alertmanager":
                self._wait_ready(child, f"{am_url}/-/ready", "Alertmanager")
        self._wait_ready(api, f"{api_url}/healthz", "the demo API")
        if self.stopping.is_set():
            return 0
        self._start_traffic(folder)

        # 5. What runs where.
        rows = [("demo API", f"{api_url}/docs", f"{SERVICE_NAME} under opentelemetry-instrument")]
        rows.append(("metrics", f"{metrics}/metrics", "usage metrics derived from the spans"))
        if _http_ok(f"{metrics}/runbooks/"):
            rows.append(("runbooks", f"{metrics}/runbooks/", "where every alert's runbook_url points"))
        if prom_url:
            # Upstream builds serve the React UI at /alerts; Debian's only the classic one.
            page = next(
                (
                    f"{prom_url}{path}"
                    for path in ("/alerts", "/classic/alerts")
                    if _http_ok(f"{prom_url}{path}")
                ),
                f"{prom_url}/",
            )
            rows.append(("Prometheus", page, rules_note))
        if am_url:
            if _has_ui(am_url):
                rows.append(("Alertmanager", f"{am_url}/#/alerts", "notifications go to the demo itself"))
            else:  # Debian's package has no web UI
                rows.append(
                    (
                        "Alertmanager",
                        f"{am_url}/api/v2/alerts",
                        f"notifications go to the demo itself; no web UI in this build: "
                        f"amtool alert --alertmanager.url={am_url}",
                    )
                )
        _say("\napiusage demo is running; Ctrl-C stops everything.")
        for name, url, note in rows:
            _say(f"  {name:<13} {url:<40} {note}")
        _say(
            f"  {'OTLP':<13} {HOST}:{p['otlp_grpc_port']} (gRPC), {HOST}:{p['otlp_http_port']} (HTTP)"
            "   send your own service's spans here"
        )
        _say(f"  {'logs':<13} {folder / 'logs'}")
        if prom_url:
            _say(f"  report:       apiusage report --prometheus {prom_url} -o report.html --range 7d")
        _say()
        return self._watch(folder, metrics, prom_url)

    def _prometheus_history(self, history: Backfill, data: Path, job: str, instance: str) -> None:
        from .promhistory import PrometheusHistoryError, write_history

        def progress(done: int, total: int) -> None:
            if self.tty:
                _say(f"\rhistory for Prometheus: {done}/{total} readings", end="")

        try:
            result = write_history(
                history,
                data,
                job=job,
                instance=instance,
                catalog=str(CATALOG),
                stop=self.stopping.is_set,
                progress=progress,
            )
        except PrometheusHistoryError as exc:  # the demo still runs, with Prometheus's minutes only
            _say(f"history for Prometheus: not written ({exc})")
            return
        if self.tty:
            _say()
        _say(
            f"history for Prometheus: {result.series:,} series read {result.snapshots} times "
            f"({result.samples:,} samples) in {result.seconds:.1f} s"
        )

    def _backfill(self, http: str, metrics: str) -> Backfill:
        from .backfill import Backfill, BackfillError

        a = self.args
        story = min(a.duration, STORY_SECONDS) if a.duration else STORY_SECONDS
        from ..app import load_plans

        history = Backfill(
            load_plans(PLANS),
            PSEUDONYM_KEY,
            days=a.history_days,
            rate=a.rate,
            seed=a.seed,
            live_duration=story,
        )
        width = 30
        shown = [-1]

        def progress(done: int, total: int, at: float) -> None:
            pct = int(100 * done / total) if total else 100
            day = time.strftime("%Y-%m-%d", time.gmtime(at))
            if self.tty:
                bar = "#" * (width * pct // 100)
                _say(f"\rhistory: [{bar:<{width}}] {pct:3d}%  {done:,}/{total:,} spans, up to {day}", end="")
            elif pct // 10 != shown[0]:
                shown[0] = pct // 10
                _say(f"history: {pct:3d}% ({done:,}/{total:,} spans, up to {day})")

        _say(
            f"history: {a.history_days} days of {len(history.members)} consumers "
            f"({len(history.calls):,} spans standing for {sum(c.count for c in history.calls):,.0f} calls)"
        )
        try:
            result = history.send(f"http://{http}/v1/traces", progress, self.stopping.is_set)
        except BackfillError as exc:
            raise DemoError(str(exc)) from None
        if self.tty:
            _say()
        sent = time.time()
        from .summary import read_metrics

        def stored() -> bool:
            try:
                r = read_metrics(f"{metrics}/metrics")
            except (urllib.error.URLError, OSError, ValueError):
                return False
            return self.stopping.is_set() or (r.processed >= r.spans and r.report_time > sent + 2)

        wait_until(stored, 30.0, 0.5)
        _say(
            f"history: sent in {result.seconds:.1f} s, stored and counted in {time.time() - sent:.1f} s more"
        )
        return history

    def _watch(self, folder: Path, metrics: str, prom_url: str | None) -> int:
        from .summary import Summary

        summary = Summary(f"{metrics}/metrics", prom_url)
        started = time.monotonic()
        next_line = started
        release_at = started + self.args.release_after if self.args.release_after else None
        notified: set[str] = set()
        while not self.stopping.is_set():
            now = time.monotonic()
            if release_at is not None and now >= release_at:
                release_at = None
                self._roll_out(folder, RELEASES[1])
                continue
            if self.args.duration and now - started >= self.args.duration:
                _say(f"apiusage demo: {self.args.duration:g} s are up (--duration)")
                break
            for child in self.children:
                if child.running():
                    continue
                if child is self.traffic and child.exit_status() == 0:
                    self._start_traffic(folder)  # a new story with the same consumers
                    break
                raise DemoError(
                    f"{child.name} stopped (status {child.exit_status()}); its log, "
                    f"{child.log_path}, ends with:\n{child.log_tail()}"
                )
            if now >= next_line:
                next_line = now + self.args.summary_every
                _say(summary.next_line())
                if self.sink is not None:
                    got = self.sink.snapshot()
                    for name, url in sorted(got.runbooks.items()):
                        if name not in notified and got.alerts.get(name) == "firing":
                            notified.add(name)
                            _say(f"  Alertmanager notified {name}: runbook {url}")
            self.stopping.wait(0.2)
        return 0

    def _shutdown(self) -> None:
        if not self.children and self.sink is None:
            return
        self.stopping.set()
        _say("apiusage demo: stopping " + ", ".join(c.name for c in reversed(self.children) if c.running()))
        for child in reversed(self.children):  # traffic first, the processor last
            status = child.stop(
                timeout=15.0 if child.name == "processor" else 10.0, hurry=lambda: self.hurry
            )  # a second Ctrl-C: kill at once
            if status not in (0, None, -signal.SIGTERM, -signal.SIGKILL, 143, 130):
                _say(f"  {child.name} exited with status {status} (log: {child.log_path})")
        if self.sink is not None:
            self.sink.stop()
            self.sink = None
        if self.api_socket is not None:
            self.api_socket.close()
            self.api_socket = None
        left = [c.name for c in self.children if c.running()]
        _say("apiusage demo: stopped" + (f", but {', '.join(left)} did not" if left else ""))
        self.children = []


def run(args: argparse.Namespace) -> int:
    demo = Demo(args)
    try:
        return demo.run()
    except PortError as exc:
        print(f"apiusage demo: {exc}", file=sys.stderr)
        return 2
    except (DemoError, ChildError) as exc:
        print(f"apiusage demo: {exc}", file=sys.stderr)
        return 1
