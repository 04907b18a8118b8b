"""hybrid-router: an Envoy ext_proc router for hybrid edge/cloud inference."""

__version__ = "0.1.0"
