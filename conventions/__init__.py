"""Contracts shared by the instrumentation and the processor, each defined once.

Like ``opentelemetry-semantic-conventions`` for an SDK and its instrumentations, this package
is what both sides import, so they cannot disagree:

- ``attributes``: the ``apiusage.*`` span attribute names and ``SCHEMA_VERSION``;
- ``useragent``: the client name and version a User-Agent names;
- ``catalog``: the endpoint catalog model and its loader;
- ``routes``: route templates compared by their parameter slots, whatever the syntax;
- ``panels``: the dashboard panel contract (uids, slugs, panel ids, titles);
- ``errors``: ``ConventionsError``, the root of ``CatalogError``, ``RouteTemplateError`` and
  ``YamlError``.

It imports nothing but the standard library and PyYAML (``_yaml``, the bounded loader), so
the processor reads the catalog without OpenTelemetry and a service's instrumentation
without the processor's servers.
"""
