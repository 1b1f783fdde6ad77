"""The bounded YAML loader, now in `apiusage.conventions._yaml`; kept for existing imports."""

from apiusage.conventions._yaml import YamlError, YamlLimits, safe_load

__all__ = ["YamlError", "YamlLimits", "safe_load"]
