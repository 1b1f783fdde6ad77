// The OpenTelemetry Node SDK as docs/attributes.md shows it; loaded with `node --require`.
// Endpoint, protocol, service name and intervals come from the standard OTEL_* variables.
'use strict';
const { NodeSDK } = require('@opentelemetry/sdk-node');
const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http');
const { ExpressInstrumentation } = require('@opentelemetry/instrumentation-express');

const sdk = new NodeSDK({
  instrumentations: [
    new HttpInstrumentation({
      // Called with the SERVER span when the response ends: what middleware stored on req is there.
      applyCustomAttributesOnSpan(span, request) {
        if (request.apiusage) span.setAttributes(request.apiusage);
      },
    }),
    new ExpressInstrumentation(),
  ],
});
sdk.start();

process.on('SIGTERM', () => {
  // Flushes spans, and exports metrics a last time, before exiting.
  sdk.shutdown().finally(() => process.exit(0));
});
