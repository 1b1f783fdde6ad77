"""Span attribute names of the API usage taxonomy (read by the processor from SERVER spans).

Schema version 2 (this one) adds the API design attributes: parameter and field names, body
sizes, validation errors, the client's region, and the feedback event.  A processor reads
version 1 and version 2 spans alike: a version 1 span simply has none of the new attributes.
"""

SCHEMA_VERSION = 2
#: Every schema version a processor of this release reads.
KNOWN_SCHEMA_VERSIONS = (1, 2)

ATTR_SCHEMA_VERSION = "apiusage.schema_version"
ATTR_CONSUMER_ID = "apiusage.consumer.id"
ATTR_PLAN_TIER = "apiusage.consumer.plan_tier"
ATTR_CLIENT_NAME = "apiusage.client.name"
ATTR_CLIENT_VERSION = "apiusage.client.version"
ATTR_API_VERSION = "apiusage.api.version"
ATTR_FEATURE = "apiusage.feature"
ATTR_DEPRECATED = "apiusage.endpoint.deprecated"

# Schema version 2: names and shapes of what a request carried, never values.
#: string[]: the names of the query parameters of the request (each once, sorted).
ATTR_QUERY_PARAMETERS = "apiusage.request.query_parameters"
#: string[]: the field names of a JSON request body down to the configured depth, nested
#: names joined with "." (each once, sorted).
ATTR_BODY_FIELDS = "apiusage.request.body_fields"
#: string[]: where each request validation error was ("body.quantity", "query.limit").
ATTR_VALIDATION_LOCATIONS = "apiusage.validation.error_locations"
#: string[]: the type of each validation error ("missing", "int_parsing"), index for index
#: with ATTR_VALIDATION_LOCATIONS.
ATTR_VALIDATION_TYPES = "apiusage.validation.error_types"
#: The last entry of a names or validation array the instrumentation cut at its cap (in both
#: validation arrays): the processor counts the cut and never counts the marker as a name.
TRUNCATED = "__truncated__"
#: What the instrumentation records in place of a name that is not name-shaped (a value posing
#: as a name: a token, an email, an IP address), so the list shows that one was sent, never
#: its text; the processor counts it like any name.
INVALID = "__invalid__"
#: string: the client's country (ISO 3166-1 alpha-2, upper case) from a trusted CDN header.
ATTR_CLIENT_REGION = "apiusage.client.region"

# Semantic-convention names the processor also reads (stable HTTP and error conventions).
HTTP_REQUEST_BODY_SIZE = "http.request.body.size"
HTTP_RESPONSE_BODY_SIZE = "http.response.body.size"
ERROR_TYPE = "error.type"
#: Resource attribute: where the service runs.
CLOUD_REGION = "cloud.region"

# Developer feedback: an OpenTelemetry event, an OTLP log record whose event name is
# EVENT_FEEDBACK, with these attributes (and ATTR_CONSUMER_ID when the caller is known).
EVENT_FEEDBACK = "apiusage.feedback"
#: int 1..5
ATTR_FEEDBACK_SCORE = "apiusage.feedback.score"
#: string: a short category the service chooses ("docs", "errors", "performance", ...).
ATTR_FEEDBACK_CATEGORY = "apiusage.feedback.category"
#: string: the route template the feedback is about, when it is about one.
ATTR_FEEDBACK_ROUTE = "apiusage.feedback.route"

# Feature flags (OpenTelemetry semantic conventions for feature flags), as OpenFeature's
# OpenTelemetry hook emits them: a span event on the request's span, or an OpenTelemetry event
# (an OTLP log record with this event name) carrying the request's trace and span ids.
#: The event name (openfeature-hooks-opentelemetry 0.3 span events, and log events).
EVENT_FEATURE_FLAG_EVALUATION = "feature_flag.evaluation"
#: The older span event name (semantic conventions before 1.27).
EVENT_FEATURE_FLAG = "feature_flag"
FEATURE_FLAG_KEY = "feature_flag.key"
#: The variant; FEATURE_FLAG_VARIANT_OLD is the older name, FEATURE_FLAG_RESULT_VALUE the JSON of
#: the value, read when a flag has no variants (a boolean flag: "true" / "false").
FEATURE_FLAG_VARIANT = "feature_flag.result.variant"
FEATURE_FLAG_VARIANT_OLD = "feature_flag.variant"
FEATURE_FLAG_RESULT_VALUE = "feature_flag.result.value"
FEATURE_FLAG_PROVIDER = "feature_flag.provider.name"
FEATURE_FLAG_PROVIDER_OLD = "feature_flag.provider_name"
#: The evaluation's targeting key: may be a raw user id, so it is never stored or exported.
FEATURE_FLAG_CONTEXT_ID = "feature_flag.context.id"
#: Resource attribute: the release of the service that answered (a bounded `version` label).
SERVICE_VERSION = "service.version"

ALL_ATTRIBUTES = (
    ATTR_SCHEMA_VERSION,
    ATTR_CONSUMER_ID,
    ATTR_PLAN_TIER,
    ATTR_CLIENT_NAME,
    ATTR_CLIENT_VERSION,
    ATTR_API_VERSION,
    ATTR_FEATURE,
    ATTR_DEPRECATED,
    ATTR_QUERY_PARAMETERS,
    ATTR_BODY_FIELDS,
    ATTR_VALIDATION_LOCATIONS,
    ATTR_VALIDATION_TYPES,
    ATTR_CLIENT_REGION,
)
