// An Express service that sets an apiusage attribute three ways (docs/attributes.md):
// on the active span (Express's own INTERNAL span: lost), on the RPC metadata span and from
// the HTTP instrumentation's hook (both the SERVER span). Prints its port, then serves.
'use strict';
const express = require('express');
const { context, trace } = require('@opentelemetry/api');
const { getRPCMetadata, RPCType } = require('@opentelemetry/core');

const app = express();

app.get('/v1/active/:id', (req, res) => {
  trace.getActiveSpan().setAttribute('apiusage.consumer.plan_tier', 'active-span');
  res.json({ id: req.params.id });
});

app.get('/v1/rpc/:id', (req, res) => {
  const rpc = getRPCMetadata(context.active());
  if (rpc && rpc.type === RPCType.HTTP) {
    rpc.span.setAttributes({ 'apiusage.schema_version': 1, 'apiusage.consumer.plan_tier': 'rpc-metadata' });
  }
  res.json({ id: req.params.id });
});

app.use('/v1/hook', (req, res, next) => {
  req.apiusage = { 'apiusage.schema_version': 1, 'apiusage.consumer.plan_tier': 'request-hook' };
  next();
});
app.get('/v1/hook/:id', (req, res) => {
  res.json({ id: req.params.id });
});

const server = app.listen(0, '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});
