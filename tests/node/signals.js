// Exports 3 metric data points and 3 log records with the Node SDK's own OTLP exporters, then
// exits. PROTOCOL: http/json, http/protobuf or grpc; ENDPOINT: the processor's base endpoint;
// COMPRESSION: gzip or none; SERVICE: service.name. Prints "exported" with each export's result.
'use strict';
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { MeterProvider, PeriodicExportingMetricReader } = require('@opentelemetry/sdk-metrics');
const { LoggerProvider, SimpleLogRecordProcessor } = require('@opentelemetry/sdk-logs');

const protocol = process.env.PROTOCOL;
const base = process.env.ENDPOINT;
const compression = process.env.COMPRESSION || 'none';
const headers = process.env.TOKEN ? { authorization: `Bearer ${process.env.TOKEN}` } : {};
const kinds = { 'http/json': 'http', 'http/protobuf': 'proto', grpc: 'grpc' };
const kind = kinds[protocol];
const { OTLPMetricExporter } = require(`@opentelemetry/exporter-metrics-otlp-${kind}`);
const { OTLPLogExporter } = require(`@opentelemetry/exporter-logs-otlp-${kind}`);

function options(path) {
  if (kind === 'grpc') {
    const { credentials, Metadata } = require('@grpc/grpc-js');
    const metadata = new Metadata();
    for (const [k, v] of Object.entries(headers)) metadata.set(k, v);
    return { url: base, compression, credentials: credentials.createInsecure(), metadata };
  }
  return { url: `${base}${path}`, compression, headers };
}

async function main() {
  const resource = resourceFromAttributes({ 'service.name': process.env.SERVICE || 'orders-api' });
  const results = [];
  const metricExporter = new OTLPMetricExporter(options('/v1/metrics'));
  const exportMetrics = metricExporter.export.bind(metricExporter);
  metricExporter.export = (data, done) => exportMetrics(data, (r) => { results.push(['metrics', r.code]); done(r); });
  const reader = new PeriodicExportingMetricReader({ exporter: metricExporter, exportIntervalMillis: 60000 });
  const meters = new MeterProvider({ resource, readers: [reader] });
  const orders = meters.getMeter('tests.node').createCounter('orders');
  orders.add(1, { plan: 'pro' });
  orders.add(2, { plan: 'free' });
  orders.add(4, { plan: 'pro' });
  await meters.forceFlush();
  await meters.shutdown();

  const logExporter = new OTLPLogExporter(options('/v1/logs'));
  const exportLogs = logExporter.export.bind(logExporter);
  logExporter.export = (logs, done) => exportLogs(logs, (r) => { results.push(['logs', r.code]); done(r); });
  const loggers = new LoggerProvider({ resource, processors: [new SimpleLogRecordProcessor({ exporter: logExporter })] });
  const logger = loggers.getLogger('tests.node');
  for (let i = 0; i < 3; i++) logger.emit({ body: `order ${i} placed`, severityText: 'INFO' });
  await loggers.forceFlush();
  await loggers.shutdown();
  console.log(`exported ${JSON.stringify(results)}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
