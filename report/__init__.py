"""`apiusage report`: a self-contained HTML usage report from a Prometheus, for the weekly review."""
