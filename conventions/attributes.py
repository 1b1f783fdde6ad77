"""Span attribute names of the API usage taxonomy (read by the processor from SERVER spans)."""

SCHEMA_VERSION = 1

ATTR_SCHEMA_VERSION = "apiusage.schema_version"
ATTR_CONSUMER_ID = "apiusage.consumer.id"
ATTR_PLAN_TIER = "apiusage.consumer.plan_tier"
ATTR_CLIENT_NAME = "apiusage.client.name"
ATTR_CLIENT_VERSION = "apiusage.client.version"
ATTR_API_VERSION = "apiusage.api.version"
ATTR_FEATURE = "apiusage.feature"
ATTR_DEPRECATED = "apiusage.endpoint.deprecated"

ALL_ATTRIBUTES = (
    ATTR_SCHEMA_VERSION,
    ATTR_CONSUMER_ID,
    ATTR_PLAN_TIER,
    ATTR_CLIENT_NAME,
    ATTR_CLIENT_VERSION,
    ATTR_API_VERSION,
    ATTR_FEATURE,
    ATTR_DEPRECATED,
)
