"""The YAML loader for the files people write (config, plan lookup, SLOs, catalog).

It lives in the instrumentation package because the endpoint catalog, which must not import
the processor, uses it too; processor code imports it from here.
"""

from apiusage.instrumentation._yaml import YamlError, YamlLimits, safe_load

__all__ = ["YamlError", "YamlLimits", "safe_load"]
