"""The ext_proc adapter: Envoy's ProcessingRequest in, the core's Decision out."""
