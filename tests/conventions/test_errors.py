"""One root for the shared package's errors, without losing the bases callers already catch."""

from __future__ import annotations

import pytest
import yaml
from apiusage.conventions._yaml import YamlError, safe_load
from apiusage.conventions.catalog import CatalogError, load_catalog
from apiusage.conventions.errors import ConventionsError
from apiusage.conventions.routes import RouteTemplateError, parse_route


def test_a_bad_catalog_route_is_a_conventions_error_naming_file_and_key(tmp_path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text("services:\n  orders-api:\n    endpoints:\n      - {method: GET, route: '/v1/{id'}\n")
    with pytest.raises(ConventionsError) as caught:
        load_catalog(path)
    assert isinstance(caught.value, CatalogError) and isinstance(caught.value, ValueError)
    assert str(caught.value) == (
        f"{path}: services.orders-api.endpoints[0].route: unbalanced '{{' at position 4 (in '/v1/{{id')"
    )


def test_an_unreadable_template_is_a_conventions_error_and_still_a_value_error() -> None:
    with pytest.raises(RouteTemplateError) as caught:
        parse_route("/v1/<id")
    assert isinstance(caught.value, ConventionsError) and isinstance(caught.value, ValueError)


def test_refused_yaml_is_a_conventions_error_and_still_a_yaml_error() -> None:
    with pytest.raises(YamlError) as caught:
        safe_load("a: 1\na: 2\n")
    assert isinstance(caught.value, ConventionsError) and isinstance(caught.value, yaml.YAMLError)
    assert str(caught.value) == "duplicate key a (first at line 1) at line 2, column 1"
