"""The instrumentation and the processor read a User-Agent the same way."""

from __future__ import annotations

import pytest
from apiusage.instrumentation._resolvers import parse_user_agent
from apiusage.processor.derive.useragent import parse_user_agent as processor_parse


@pytest.mark.parametrize(
    ("ua", "client"),
    [
        ("orders-sdk/1.2.3 (python 3.11)", ("orders-sdk", "1.2.3")),
        ("Orders-SDK/2.0.0-beta.1", ("orders-sdk", "2.0.0-beta.1")),
        ("Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0", ("browser", None)),
        ("Opera/9.80 (Windows NT 6.1)", ("browser", None)),
        ("my-cron-job", ("my-cron-job", None)),
        ("", (None, None)),
    ],
)
def test_user_agent_client(ua: str, client: tuple[str | None, str | None]) -> None:
    assert parse_user_agent(ua) == client
    name, version = client
    # What the processor derives from the same header when a span carries no client attributes.
    assert processor_parse(ua) == (name or "unknown", version or "unknown")
