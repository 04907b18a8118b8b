"""The router as Envoy's control plane for the inference clusters (ADS, state of the world)."""
