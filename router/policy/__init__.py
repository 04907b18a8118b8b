"""Policy YAML: strict parsing with located errors, then the typed model."""
