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


# `value`: "key": value of the refused value, whose column the message must name (None: the
# document as a whole, 1:1).
@pytest.mark.parametrize(("edit", "fragment", "value"), [
    pytest.param(lambda d: d["prices"][0].update(usd_per_hour=float("nan")), "NaN", None,
                 id="nan-price"),
    pytest.param(lambda d: d["nodes"][0].update(slots=-1), "slots", '"slots": -1',
                 id="negative-slots"),
    pytest.param(lambda d: d["nodes"][0].update(id="ghost"), "unknown-node", '"id": "ghost"',
                 id="unknown-node"),
    pytest.param(lambda d: d["prices"][0].update(usd_per_hour=0),
                 "prices[0].usd_per_hour: must be greater than 0, got 0", '"usd_per_hour": 0',
                 id="zero-price"),
])
def test_bad_feed_is_refused_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         edit, fragment: str,  # type: ignore[no-untyped-def]
                                         value: str | None) -> None:
    doc = json.loads((ROOT / "policies" / "feeds" / "demo.json").read_text())
    edit(doc)
    bad = tmp_path / "feed.json"
    text = json.dumps(doc)
    bad.write_text(text)
    assert main(["validate", "--policy", str(ROOT / "policies" / "example.yaml"),
                 str(bad)]) == 2
    err = capsys.readouterr().err
    col = 1 if value is None else text.index(value) + value.index(": ") + 3
    assert err.startswith(f"{bad}:1:{col}: feed rejected") and fragment in err
