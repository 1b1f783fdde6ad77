"""The client a real instrumented app names from a User-Agent: the shared parser's answers.

The parser itself, and the processor agreeing with the instrumentation for every input, are
tested in tests/conventions/test_useragent.py.
"""

from __future__ import annotations

import pytest
from apiusage.instrumentation import instrument
from instr_support import KEY
from orders_app import build_app


@pytest.mark.parametrize(
    ("ua", "client"),
    [
        ("orders-sdk/1.2.3 (python 3.11)", {"name": "orders-sdk", "version": "1.2.3"}),
        ("Orders-SDK/2.0.0-beta.1", {"name": "orders-sdk", "version": "2.0.0-beta.1"}),
        ("Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0", {"name": "browser"}),
        ("mozilla/5.0 (x)", {"name": "browser"}),
        ("Opera/9.80 (Windows NT 6.1)", {"name": "browser"}),
        ("1password-cli/2.0", {"name": "1password-cli", "version": "2.0"}),
        ("sdk/v2.1", {"name": "sdk", "version": "v2.1"}),
        ("my-cron-job", {"name": "my-cron-job"}),
        ("x" * 65 + "/1.0", {}),
        ("(compatible)", {}),
        ("", {}),
    ],
)
def test_user_agent_client(spans, client_for, ua: str, client: dict[str, str]) -> None:
    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY)
    assert client_for(app).get("/v1/orders/1", headers={"User-Agent": ua}).status_code == 200
    prefix = "apiusage.client."
    got = {k.removeprefix(prefix): v for k, v in spans.apiusage().items() if k.startswith(prefix)}
    assert got == client
