"""The HTTP side: /metrics, /healthz (and, next, the status page and the push endpoint)."""
