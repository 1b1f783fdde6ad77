"""The YAML loader for the files people write (config, plan lookup, SLOs, catalog).

It lives in `apiusage.conventions` because the endpoint catalog, which the instrumentation
reads too, uses it; processor code imports it from here.
"""

from apiusage.conventions._yaml import YamlError, YamlLimits, safe_load

__all__ = ["YamlError", "YamlLimits", "safe_load"]
