"""Traffic for the demo service: a population of consumers behaving like real API users.

    python -m apiusage.demo.traffic --target http://127.0.0.1:8000 --duration 60

One consumer per API key of the plan mapping (``plans.yaml``), each with its plan tier,
an activity level that grows with the plan, and a client SDK and version sent in
``X-Client-Name``/``X-Client-Version`` (a few send only a curl User-Agent). Over a run:

* most consumers are active from the start; the others join later (new consumers), and
  many of those fail before their first success (validation errors, a missing search
  term), like a developer getting started;
* consumers on old SDKs call the v1 routes, including the deprecated
  ``DELETE /v1/orders/{order_id}`` and ``GET /v1/reports/{report_id}``; half of them
  upgrade during the run and move to the v2 replacements;
* now and then an enterprise consumer fires a burst of export requests that exceeds the
  service's capacity (503), and a few requests hit missing orders (404), or webhooks on
  the free plan (403);
* ``GET /v2/status`` is called without a key (spans without a consumer);
* each SDK has its habits with the optional parts of the API: the Python SDK paginates
  with ``cursor`` and sends ``note`` and ``shipping`` with orders, the JavaScript SDK
  asks for ``expand=lines`` and sends a ``coupon``, curl users send bare requests, and
  nobody sends ``include_archived``;
* the JavaScript SDK (4.x) sends order quantities as the text of a form field, and
  ``"2 pcs"`` fails validation (``body.lines.N.quantity``, ``int_parsing``): its 4xx ratio
  on ``POST /v2/orders`` is many times the other SDKs'; the CLI forgets the required
  ``since`` of an export now and then (``body.since``, ``missing``);
* exports are downloaded (several MB, streamed), a few invoices sit in a legacy ledger
  that fails (500);
* every consumer calls from one country, sent in ``CF-IPCountry`` as a CDN would
  (:func:`region_of`), and now and then posts feedback (``POST /v1/feedback``) with a
  score and a category of its own (:func:`opinion_of`).

Bounded: every run stops after ``duration`` seconds or ``max_requests`` requests,
whichever comes first, and it only talks to loopback addresses or single-label host
names (compose service names such as ``demo``), never to the internet.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import ipaddress
import json
import random
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from apiusage.demo import PLANS, REGION_HEADER
from apiusage.demo.app import MAX_ORDER_ID, load_plans

MAX_DURATION = 7 * 86400.0
MAX_REQUESTS = 10_000_000
MAX_RATE = 1000.0

# Client SDKs and their versions before (v1 routes) and after (v2 routes) the migration.
SDKS = {
    "shop-sdk-python": {"v1": ["1.8.2", "1.9.0"], "v2": ["2.0.1", "2.1.0"]},
    "shop-sdk-js": {"v1": ["3.2.0"], "v2": ["4.0.0", "4.1.2"]},
    "shop-cli": {"v1": ["0.9.4"], "v2": ["1.0.0"]},
}
ACTIVITY = {"enterprise": 4.0, "pro": 2.0, "free": 1.0}
EXPORT_BURST = 25  # concurrent export requests in a burst, well over the service's capacity
# Countries of the consumers (ISO 3166-1 alpha-2, as CF-IPCountry gives them), by weight.
REGIONS = {"US": 30, "DE": 14, "GB": 12, "IN": 10, "FR": 8, "BR": 8, "JP": 7, "AU": 6, "CA": 5}
# What consumers write feedback about, by weight; JavaScript SDK users mostly about errors.
TOPICS = {"docs": 4, "performance": 2, "sdk": 2, "errors": 1, "pricing": 1}


def region_of(key: str) -> str:
    """The country a consumer calls from: fixed per API key, the same in every run and the history."""
    rng = random.Random(f"region:{key}")
    return rng.choices(list(REGIONS), list(REGIONS.values()))[0]


def opinion_of(key: str, client: str | None) -> tuple[float, str]:
    """A consumer's usual feedback: (mean score, favourite category), fixed per API key."""
    rng = random.Random(f"feedback:{key}")
    mood = rng.uniform(2.5, 4.8)
    topic = rng.choices(list(TOPICS), list(TOPICS.values()))[0]
    if client == "shop-sdk-js":  # its order validation errors show in what its users say
        return min(mood, 2.5), "errors"
    return mood, topic


@dataclasses.dataclass
class Consumer:
    key: str
    tier: str
    client: str | None  # None: no SDK headers, a curl User-Agent
    version: str
    api: str  # "v1" (old SDK) or "v2"
    joins_at: float  # seconds into the run
    failures_before_success: int
    migrates_at: float | None  # when a v1 consumer upgrades to the v2 SDK
    activity: float
    migrated: bool = False
    replacements_due: list[str] = dataclasses.field(default_factory=list)
    region: str = "US"
    mood: float = 4.0  # mean feedback score
    topic: str = "docs"  # favourite feedback category

    def headers(self) -> dict[str, str]:
        out = {"X-API-Key": self.key, REGION_HEADER: self.region}
        if self.client is None:
            out["User-Agent"] = "curl/8.5.0"
        else:
            out["X-Client-Name"] = self.client
            out["X-Client-Version"] = self.version
            out["User-Agent"] = f"{self.client}/{self.version}"
        return out


@dataclasses.dataclass
class Request:
    method: str
    path: str
    json: dict | None = None
    params: dict | None = None
    authenticated: bool = True
    stream: bool = False  # read the body as it comes and drop it (export downloads)


def check_target(url: str) -> str:
    """The base URL, if its host is loopback or a compose service name; else ValueError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"target must be an http(s) URL, got {url!r}")
    host = parts.hostname
    try:
        allowed = ipaddress.ip_address(host).is_loopback
    except ValueError:
        label = re.fullmatch(r"[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?", host)
        allowed = host == "localhost" or label is not None
    if not allowed:
        raise ValueError(
            f"target host {host!r} is neither loopback nor a compose service name "
            "(a single-label host name); the demo traffic never leaves the stack"
        )
    return url.rstrip("/")


def population(plans: dict[str, str], duration: float, rng: random.Random) -> list[Consumer]:
    """One consumer per API key, with the behaviour described in the module docstring."""
    out = []
    for key, tier in sorted(plans.items()):
        api = "v1" if rng.random() < 0.3 else "v2"
        client = rng.choice([*SDKS, None]) if rng.random() < 0.9 else None
        version = rng.choice(SDKS[client][api]) if client else "8.5.0"
        late = rng.random() < 0.3
        joins_at = rng.uniform(0.05, 0.6) * duration if late else 0.0
        failures = rng.randint(1, 3) if late and rng.random() < 0.6 else 0
        migrates_at = (
            rng.uniform(0.2, 0.7) * duration
            if api == "v1" and client is not None and rng.random() < 0.5
            else None
        )
        mood, topic = opinion_of(key, client)
        out.append(
            Consumer(
                key,
                tier,
                client,
                version,
                api,
                joins_at,
                failures,
                migrates_at,
                ACTIVITY.get(tier, 1.0) * rng.uniform(0.5, 1.5),
                region=region_of(key),
                mood=mood,
                topic=topic,
            )
        )
    return out


def order_id(rng: random.Random) -> int:
    return MAX_ORDER_ID + rng.randint(1, 1000) if rng.random() < 0.02 else rng.randint(1, 5000)


def new_order(rng: random.Random, c: Consumer | None = None) -> dict:
    """An order as the consumer's SDK writes it: its optional fields, its quantity format."""
    client = c.client if c is not None else None
    text_quantities = client == "shop-sdk-js" and c is not None and c.api == "v2"
    lines = []
    for _ in range(rng.randint(1, 4)):
        quantity: int | str = rng.randint(1, 5)
        if text_quantities:  # the form field's text: "3" passes, "3 pcs" does not
            quantity = f"{quantity} pcs" if rng.random() < 0.4 else str(quantity)
        lines.append({"sku": f"SKU-{rng.randint(1, 400)}", "quantity": quantity})
    order: dict = {"lines": lines}
    if client == "shop-sdk-python":
        if rng.random() < 0.3:
            order["note"] = rng.choice(["leave at the door", "gift wrap", "call before delivery"])
        if rng.random() < 0.5:
            order["shipping"] = {"method": rng.choice(["standard", "express"])}
    elif client == "shop-sdk-js" and rng.random() < 0.2:
        order["coupon"] = f"WINTER{rng.randint(10, 30)}"
    return order


def list_params(c: Consumer, rng: random.Random) -> dict:
    """Query parameters of GET /v2/orders as the consumer's SDK sends them."""
    params: dict = {"limit": rng.choice([10, 20, 50])}
    if c.client == "shop-sdk-python" and rng.random() < 0.6:
        params["cursor"] = f"c{rng.randint(1, 10**9)}"  # the next page
    elif c.client == "shop-sdk-js" and rng.random() < 0.7:
        params["expand"] = "lines"
    elif c.client is None and rng.random() < 0.5:
        del params["limit"]  # curl: the bare URL
    return params


def new_export(c: Consumer, rng: random.Random) -> dict:
    body: dict = {"kind": "orders", "since": "2026-01-01"}
    if c.client == "shop-cli" and rng.random() < 0.5:
        del body["since"]  # `shop export` without --since: the required field is missing
    elif c.client == "shop-sdk-python":
        if rng.random() < 0.3:
            body["format"] = "jsonl"
        if rng.random() < 0.2:
            body["compress"] = True
    return body


def feedback(c: Consumer, rng: random.Random) -> Request:
    """A feedback post: a score around the consumer's mood, mostly about its favourite topic."""
    score = max(1, min(5, round(rng.gauss(c.mood, 0.8))))
    category = c.topic if rng.random() < 0.7 else rng.choice(list(TOPICS))
    body: dict = {"score": score, "category": category}
    if category == "errors" and c.client == "shop-sdk-js":
        body["route"] = "/v2/orders"
    if rng.random() < 0.3:
        body["comment"] = "Took me a while to get this right."  # free text: never recorded
    return Request("POST", "/v1/feedback", json=body)


def choose(c: Consumer, rng: random.Random) -> Request:
    """The consumer's next request."""
    if c.failures_before_success > 0:  # getting started: not yet a valid request
        c.failures_before_success -= 1
        return rng.choice(
            [
                Request("POST", "/v2/orders", json={"lines": []}),
                Request("GET", "/v2/search"),
                Request("POST", "/v2/exports", json={"kind": "everything", "since": "yesterday"}),
            ]
        )
    if c.replacements_due:  # just upgraded: try the replacements of the deprecated calls first
        method, path = c.replacements_due.pop().split(" ")
        return Request(method, path.format(id=order_id(rng) if "orders" in path else rng.randint(1, 300)))
    if rng.random() < 0.02:
        return Request("GET", "/v2/status", authenticated=False)
    if c.api == "v1":
        ops: list[tuple[float, Callable[[], Request]]] = [
            (25, lambda: Request("GET", "/v1/orders", params={"limit": rng.choice([10, 20, 50])})),
            (25, lambda: Request("GET", f"/v1/orders/{order_id(rng)}")),
            (10, lambda: Request("POST", "/v1/orders", json=new_order(rng, c))),
            (20, lambda: Request("DELETE", f"/v1/orders/{order_id(rng)}")),
            (10, lambda: Request("GET", f"/v1/reports/{rng.randint(1, 300)}")),
            (1, lambda: feedback(c, rng)),
        ]
    else:
        ops = [
            (25, lambda: Request("GET", "/v2/orders", params=list_params(c, rng))),
            (30, lambda: Request("GET", f"/v2/orders/{order_id(rng)}")),
            (10, lambda: Request("POST", "/v2/orders", json=new_order(rng, c))),
            (8, lambda: Request("DELETE", f"/v2/orders/{order_id(rng)}")),
            (8, lambda: Request("GET", f"/v2/invoices/INV-{rng.randint(1000, 9999)}")),
            (10, lambda: Request("GET", "/v2/search", params={"q": rng.choice(["paid", "late", "sku:12"])})),
            (3 if c.tier != "free" else 1, lambda: Request("POST", "/v2/exports", json=new_export(c, rng))),
            (5, lambda: Request("GET", f"/v2/exports/{rng.randint(1, 300)}")),
            (
                1.5 if c.tier != "free" else 0.3,
                lambda: Request("GET", f"/v2/exports/{rng.randint(1, 300)}/download", stream=True),
            ),
            (
                3 if c.tier != "free" else 0.5,
                lambda: Request(
                    "POST",
                    "/v2/webhooks",
                    json={"url": "https://hooks.example.com/orders", "events": ["order.paid"]},
                ),
            ),
            (1, lambda: feedback(c, rng)),
        ]
    weights = [w for w, _ in ops]
    return rng.choices([make for _, make in ops], weights)[0]()


@dataclasses.dataclass
class Stats:
    requests: int = 0
    errors: int = 0  # transport errors (no response)
    reconnects: int = 0  # requests sent again after a kept-alive connection closed under them
    by_status: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    bursts: int = 0
    migrations: int = 0
    joined: int = 0
    seconds: float = 0.0
    downloaded: int = 0  # bytes of streamed export downloads

    def summary(self) -> str:
        return json.dumps(
            {
                "requests": self.requests,
                "transport_errors": self.errors,
                "reconnects": self.reconnects,
                "status": dict(sorted(self.by_status.items())),
                "bursts": self.bursts,
                "migrations": self.migrations,
                "consumers": self.joined,
                "downloaded_bytes": self.downloaded,
                "seconds": round(self.seconds, 1),
            },
            sort_keys=True,
        )


class Generator:
    def __init__(
        self,
        target: str,
        plans: dict[str, str],
        *,
        duration: float,
        max_requests: int,
        rate: float,
        seed: int | None,
        concurrency: int,
        burst_every: float | None,
    ) -> None:
        if not 0 < duration <= MAX_DURATION:
            raise ValueError(f"duration must be in (0, {MAX_DURATION:.0f}] seconds, got {duration}")
        if not 1 <= max_requests <= MAX_REQUESTS:
            raise ValueError(f"max_requests must be in [1, {MAX_REQUESTS}], got {max_requests}")
        if not 0 < rate <= MAX_RATE:
            raise ValueError(f"rate must be in (0, {MAX_RATE:.0f}] requests per second, got {rate}")
        if not plans:
            raise ValueError("the plan mapping lists no consumers")
        self.target = check_target(target)
        self.duration, self.max_requests, self.rate = duration, max_requests, rate
        self.rng = random.Random(seed)
        self.consumers = population(plans, duration, self.rng)
        self.semaphore = asyncio.Semaphore(max(1, concurrency))
        self.burst_every = burst_every if burst_every is not None else max(15.0, duration / 4)
        self.stats = Stats()
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True

    async def send(self, client: httpx.AsyncClient, consumer: Consumer, request: Request) -> None:
        headers = (
            consumer.headers()
            if request.authenticated
            else {"User-Agent": "uptime-check/1.0", REGION_HEADER: "US"}
        )
        for attempt in (1, 2):
            try:
                if request.stream:
                    async with client.stream(request.method, request.path, headers=headers) as response:
                        async for chunk in response.aiter_raw():
                            self.stats.downloaded += len(chunk)
                else:
                    response = await client.request(
                        request.method,
                        request.path,
                        json=request.json,
                        params=request.params,
                        headers=headers,
                    )
                self.stats.by_status[response.status_code] += 1
                return
            except httpx.RemoteProtocolError:
                # "Server disconnected without sending a response": a kept-alive connection the
                # server closed as the request went out (a rolling restart's old process shutting
                # down). The server never read it, so it is sent once more on a new connection, as
                # HTTP clients do.
                if attempt == 2:
                    self.stats.errors += 1
                else:
                    self.stats.reconnects += 1
            except httpx.HTTPError:
                self.stats.errors += 1
                return

    async def one(self, client: httpx.AsyncClient, consumer: Consumer, request: Request) -> None:
        async with self.semaphore:
            await self.send(client, consumer, request)

    async def burst(self, client: httpx.AsyncClient, consumer: Consumer) -> None:
        """An enterprise consumer's nightly batch started by hand: exports over capacity."""
        self.stats.bursts += 1
        body = {"kind": "invoices", "since": "2026-01-01"}
        await asyncio.gather(
            *(
                self.send(client, consumer, Request("POST", "/v2/exports", json=body))
                for _ in range(EXPORT_BURST)
            )
        )

    def active(self, elapsed: float) -> list[Consumer]:
        out = []
        for c in self.consumers:
            if c.joins_at > elapsed:
                continue
            if c.migrates_at is not None and not c.migrated and elapsed >= c.migrates_at:
                c.migrated, c.api = True, "v2"
                c.replacements_due = ["GET /v2/exports/{id}", "DELETE /v2/orders/{id}"]
                c.version = self.rng.choice(SDKS[c.client]["v2"]) if c.client else c.version
                self.stats.migrations += 1
            out.append(c)
        return out

    async def run(self) -> Stats:
        started = time.monotonic()
        tasks: set[asyncio.Task] = set()
        next_burst = self.rng.uniform(0.2, 0.6) * min(self.burst_every, self.duration)
        next_report = 60.0
        enterprise = [c for c in self.consumers if c.tier == "enterprise"] or self.consumers
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        async with httpx.AsyncClient(base_url=self.target, timeout=10, limits=limits) as client:
            while not self.stopping:
                elapsed = time.monotonic() - started
                if elapsed >= self.duration or self.stats.requests >= self.max_requests:
                    break
                if elapsed >= next_report:
                    next_report += 60.0
                    print(f"traffic: {self.stats.summary()}", flush=True)
                active = self.active(elapsed)
                if elapsed >= next_burst and self.stats.requests + EXPORT_BURST <= self.max_requests:
                    next_burst = elapsed + self.rng.expovariate(1 / self.burst_every)
                    self.stats.requests += EXPORT_BURST
                    task = asyncio.create_task(self.burst(client, self.rng.choice(enterprise)))
                else:
                    consumer = self.rng.choices(active, [c.activity for c in active])[0]
                    self.stats.requests += 1
                    task = asyncio.create_task(self.one(client, consumer, choose(consumer, self.rng)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                # Poisson arrivals at `rate` per second.
                await asyncio.sleep(min(self.rng.expovariate(self.rate), 5.0))
            if tasks:
                await asyncio.wait(tasks, timeout=15)
        self.stats.joined = sum(1 for c in self.consumers if c.joins_at <= time.monotonic() - started)
        self.stats.seconds = time.monotonic() - started
        return self.stats


def run(
    target: str,
    *,
    duration: float = 60.0,
    max_requests: int = 100_000,
    rate: float = 20.0,
    seed: int | None = None,
    plans: str | Path | dict[str, str] | None = None,
    concurrency: int = 16,
    burst_every: float | None = None,
) -> Stats:
    """Send demo traffic to `target` until `duration` seconds or `max_requests` requests."""
    keys = plans if isinstance(plans, dict) else load_plans(plans or PLANS)
    generator = Generator(
        target,
        keys,
        duration=duration,
        max_requests=max_requests,
        rate=rate,
        seed=seed,
        concurrency=concurrency,
        burst_every=burst_every,
    )
    return asyncio.run(_main(generator))


async def _main(generator: Generator) -> Stats:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, generator.stop)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
            pass
    return await generator.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m apiusage.demo.traffic",
        description="Send bounded, realistic traffic to the demo service.",
    )
    parser.add_argument(
        "--target",
        default="http://127.0.0.1:8000",
        help="base URL of the demo service (loopback or a compose service name)",
    )
    parser.add_argument("--duration", type=float, default=300.0, help="seconds to run (at most 7 days)")
    parser.add_argument("--max-requests", type=int, default=100_000, help="stop after this many requests")
    parser.add_argument("--rate", type=float, default=20.0, help="average requests per second")
    parser.add_argument("--seed", type=int, default=None, help="random seed, for a reproducible run")
    parser.add_argument("--plans", default=None, help="plan mapping file (default: the packaged plans.yaml)")
    parser.add_argument(
        "--burst-every",
        type=float,
        default=None,
        help="mean seconds between export bursts (default: a quarter of the run, at least 15)",
    )
    args = parser.parse_args(argv)
    try:
        stats = run(
            args.target,
            duration=args.duration,
            max_requests=args.max_requests,
            rate=args.rate,
            seed=args.seed,
            plans=args.plans,
            burst_every=args.burst_every,
        )
    except (ValueError, OSError) as exc:
        print(f"traffic: error: {exc}", file=sys.stderr)
        return 2
    print(f"traffic: done {stats.summary()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
