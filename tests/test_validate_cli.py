"""`hybrid-router validate` on feed files applies the router's own checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_demo_feed_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    feed = ROOT / "policies" / "feeds" / "demo.json"
    assert main(["validate", "--policy", str(ROOT / "policies" / "example.yaml"),
                 str(feed)]) == 0
    assert capsys.readouterr().out.strip().endswith(": ok")


@pytest.mark.parametrize(("edit", "fragment"), [
    pytest.param(lambda d: d["prices"][0].update(usd_per_hour=float("nan")), "NaN",
                 id="nan-price"),
    pytest.param(lambda d: d["nodes"][0].update(slots=-1), "slots", id="negative-slots"),
    pytest.param(lambda d: d["nodes"][0].update(id="ghost"), "unknown-node", id="unknown-node"),
])
def test_bad_feed_is_refused_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         edit, fragment: str) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads((ROOT / "policies" / "feeds" / "demo.json").read_text())
    edit(doc)
    bad = tmp_path / "feed.json"
    bad.write_text(json.dumps(doc))
    assert main(["validate", "--policy", str(ROOT / "policies" / "example.yaml"),
                 str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{bad}:1:1: feed rejected") and fragment in err
