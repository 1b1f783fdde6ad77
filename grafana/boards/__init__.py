"""The dashboard builders of grafana/build.py: one module per dashboard, shared parts in kit.py."""
