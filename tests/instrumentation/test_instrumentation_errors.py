"""One exception root for the instrumentation."""

from __future__ import annotations

from apiusage.instrumentation._config import ConfigurationError
from apiusage.instrumentation._errors import InstrumentationError


def test_configuration_error_derives_from_the_root_and_stays_a_value_error() -> None:
    assert issubclass(ConfigurationError, InstrumentationError)
    assert issubclass(ConfigurationError, ValueError)
    assert str(ConfigurationError("APIUSAGE_X: bad")) == "APIUSAGE_X: bad"
