"""Regenerate the Envoy config embedded in docs/k8s-sidecar.yaml from the policy beside it.

    .venv/bin/python scripts/regen-k8s-envoy.py

The ConfigMap's `envoy.yaml` must be exactly what `hybrid-router envoy-config` prints for its
`policy.yaml` (tests/test_deploy.py checks it); this rewrites that one block in place and keeps
the rest of the file, comments included.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import yaml

from router import envoy_config
from router.policy.loader import load_policy

FILE = Path(__file__).resolve().parents[1] / "docs" / "k8s-sidecar.yaml"


def main() -> int:
    text = FILE.read_text()
    docs = list(yaml.safe_load_all(text))
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    router = next(c for c in deploy["spec"]["template"]["spec"]["containers"]
                  if c["name"] == "hybrid-router")
    grpc = router["args"][router["args"].index("--grpc") + 1]
    with tempfile.TemporaryDirectory() as tmp:
        policy_file = Path(tmp) / "policy.yaml"
        policy_file.write_text(config["policy.yaml"])
        rendered = envoy_config.render(load_policy(policy_file), "sidecar",
                                       listen="127.0.0.1:15001", router=grpc,
                                       admin="127.0.0.1:15000", source="policy.yaml")
    block = re.search(r"^(  envoy\.yaml: \|\n)((?:    .*\n|\n)+)", text, re.M)
    if block is None:
        print("no `envoy.yaml: |` block in the ConfigMap", file=sys.stderr)
        return 1
    body = "".join(f"    {line}\n" if line else "\n" for line in rendered.splitlines())
    FILE.write_text(text[:block.start(2)] + body + text[block.end(2):])
    return 0


if __name__ == "__main__":
    sys.exit(main())
