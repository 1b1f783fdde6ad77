"""Configuration: unsafe settings refuse to start with a clear message; harmless typos fall back."""

from __future__ import annotations

import logging

import pytest
from apiusage.instrumentation import ConfigurationError, Settings, instrument
from apiusage.instrumentation._config import ENVIRONMENT_VARIABLES
from instr_support import KEY, pseudonym
from orders_app import build_app

NO_KEY = (
    "apiusage: refusing to start: consumer resolution is on: APIUSAGE_CONSUMER_RESOLVER=header "
    "(the default), but no pseudonymization key is set. Consumer ids are only ever exported as "
    "keyed HMACs, never raw. Set APIUSAGE_PSEUDONYM_KEY (or APIUSAGE_PSEUDONYM_KEY_FILE) to a "
    "secret of at least 16 bytes shared by all replicas, or set APIUSAGE_CONSUMER_RESOLVER=none "
    "to export no consumer ids."
)


def test_missing_key_with_the_default_resolver_refuses(spans):
    app = build_app()
    with pytest.raises(ConfigurationError) as err:
        instrument(app, tracer_provider=spans.provider)
    assert str(err.value) == NO_KEY
    # Nothing was installed: the app is not half-instrumented.
    assert not getattr(app, "_is_instrumented_by_opentelemetry", False)
    assert app.user_middleware == []


def test_missing_key_with_a_code_resolver_names_it(spans):
    with pytest.raises(ConfigurationError, match=r"instrument\(consumer=.*RequestState\('uid'\)\)"):
        from apiusage.instrumentation import RequestState

        instrument(build_app(), tracer_provider=spans.provider, consumer=RequestState("uid"))


@pytest.mark.parametrize("key", ["", "   "])
def test_empty_key_counts_as_missing(spans, key):
    with pytest.raises(ConfigurationError, match="no pseudonymization key is set"):
        instrument(build_app(), tracer_provider=spans.provider, environ={"APIUSAGE_PSEUDONYM_KEY": key})


def test_short_key_refuses(spans):
    with pytest.raises(ConfigurationError) as err:
        instrument(build_app(), tracer_provider=spans.provider, environ={"APIUSAGE_PSEUDONYM_KEY": "short"})
    assert str(err.value).startswith(
        "apiusage: refusing to start: the pseudonymization key from APIUSAGE_PSEUDONYM_KEY is 5 bytes; "
        "use a secret of at least 16 bytes"
    )


def test_key_file(spans, client_for, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    app = build_app()
    instrument(app, tracer_provider=spans.provider, environ={"APIUSAGE_PSEUDONYM_KEY_FILE": str(key_file)})
    client_for(app).get("/v1/orders/1", headers={"X-API-Key": "k"})
    assert spans.apiusage()["apiusage.consumer.id"] == pseudonym("k")


def test_unreadable_key_file_refuses(spans, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ConfigurationError) as err:
        instrument(
            build_app(), tracer_provider=spans.provider, environ={"APIUSAGE_PSEUDONYM_KEY_FILE": str(missing)}
        )
    assert str(err.value) == (
        f"apiusage: refusing to start: cannot read the pseudonymization key file "
        f"APIUSAGE_PSEUDONYM_KEY_FILE={missing}: No such file or directory"
    )


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "{path}: catalog file not found"),
        ("services: [\n", "{path}: not valid YAML at line 2, column 1: expected the node content"),
        (
            "services:\n  s:\n    endpoints:\n      - {method: GET, route: /a, sunset: soon}\n",
            "{path}: services.s.endpoints[0].sunset: not a date (got 'soon')",
        ),
    ],
)
def test_bad_catalog_refuses(spans, tmp_path, content, message):
    path = tmp_path / "catalog.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigurationError) as err:
        instrument(
            build_app(),
            tracer_provider=spans.provider,
            pseudonym_key=KEY,
            environ={"APIUSAGE_CATALOG": str(path)},
        )
    assert str(err.value).startswith(
        "apiusage: refusing to start: bad catalog (APIUSAGE_CATALOG): " + message.format(path=path)
    )


def test_directory_as_catalog_refuses(spans, tmp_path):
    with pytest.raises(ConfigurationError, match="is a directory, not a catalog file"):
        instrument(build_app(), tracer_provider=spans.provider, pseudonym_key=KEY, catalog=tmp_path)


def test_bad_plan_tier_file_refuses(spans, tmp_path):
    path = tmp_path / "tiers.yaml"
    path.write_text("consumers:\n  a: [not, a, tier]\n")
    with pytest.raises(ConfigurationError) as err:
        instrument(build_app(), tracer_provider=spans.provider, pseudonym_key=KEY, plan_tier=path)
    assert str(err.value) == f"{path}: consumers.a: expected a tier name"


def test_harmless_typos_are_logged_and_fall_back(caplog):
    with caplog.at_level(logging.WARNING, logger="apiusage.instrumentation"):
        settings = Settings.from_env(
            {
                "APIUSAGE_DEPRECATION_HEADERS": "maybe",
                "APIUSAGE_FEATURE_SOURCES": "tags,colour",
                "APIUSAGE_CLIENT_FROM_USER_AGENT": "no",
            }
        )
    assert settings.deprecation_headers is True
    assert settings.feature_sources == ("tags",)
    assert settings.client_from_user_agent is False
    assert sorted(r.getMessage() for r in caplog.records) == [
        "apiusage: ignoring APIUSAGE_DEPRECATION_HEADERS='maybe' (expected true or false); using true",
        "apiusage: ignoring unknown source 'colour' in APIUSAGE_FEATURE_SOURCES "
        "(known: catalog, openapi, tags, or none)",
    ]


def test_unimportable_resolver_is_skipped_not_fatal(spans, client_for, caplog):
    app = build_app()
    with caplog.at_level(logging.ERROR, logger="apiusage.instrumentation"):
        instrument(
            app,
            tracer_provider=spans.provider,
            environ={"APIUSAGE_CONSUMER_RESOLVER": "no_such_module:resolve"},
        )
    assert "ignoring APIUSAGE_CONSUMER_RESOLVER entry 'no_such_module:resolve'" in caplog.text
    client_for(app).get("/v1/orders/1", headers={"X-API-Key": "k"})
    assert "apiusage.consumer.id" not in spans.apiusage()


def test_in_code_resolver_lists_mix_builtins_callables_and_junk(caplog):
    from apiusage.instrumentation._builder import build_enricher
    from apiusage.instrumentation._resolvers import ApiKeyHeader, RequestState

    settings = Settings.from_env({"APIUSAGE_PSEUDONYM_KEY": KEY})

    def mine(request):
        return None

    with caplog.at_level(logging.ERROR, logger="apiusage.instrumentation"):
        enricher = build_enricher(settings, consumer=["header", mine, ["not", "hash"]], plan_tier=" None ")
    assert [type(r) for r in enricher.consumer_resolvers] == [ApiKeyHeader, type(mine)]
    assert "ignoring APIUSAGE_CONSUMER_RESOLVER entry ['not', 'hash']" in caplog.text
    assert enricher.plan_tier_resolvers == ()
    tiers = build_enricher(settings, consumer=False, plan_tier="state, mapping").plan_tier_resolvers
    assert [type(r) for r in tiers] == [RequestState]  # no plan-tier file: the mapping is off


def test_defaults_match_the_documented_table():
    settings = Settings.from_env({})
    assert settings.consumer_resolver == ("header",)
    assert settings.consumer_header == ENVIRONMENT_VARIABLES["APIUSAGE_CONSUMER_HEADER"] == "X-API-Key"
    assert settings.default_plan_tier == "unknown"
    assert settings.client_name_header == "X-Client-Name"
    assert settings.feature_sources == ("catalog", "openapi", "tags")


def test_every_variable_is_documented():
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "instrumentation.md").read_text()
    missing = [name for name in ENVIRONMENT_VARIABLES if f"`{name}`" not in doc]
    assert missing == []
