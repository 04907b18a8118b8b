"""Counts and durations on every command line are checked before anything starts."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from router.cli import main
from router.cliargs import POSITIVE, number

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = str(ROOT / "policies" / "example.yaml")
TWIN = str(ROOT / "simulator" / "scenarios" / "twin.yaml")


@pytest.mark.parametrize(("argv", "flag", "value", "want"), [
    (["serve", "--policy", EXAMPLE], "--workers", "0", "an integer of at least 1"),
    (["serve", "--policy", EXAMPLE], "--max-streams", "0", "an integer of at least 1"),
    (["serve", "--policy", EXAMPLE], "--xds-max-streams", "-3", "an integer of at least 1"),
    (["serve", "--policy", EXAMPLE], "--grace", "-1", "a number of at least 0"),
    (["serve", "--policy", EXAMPLE], "--upstream-timeout", "0", "a number above 0"),
    (["serve", "--policy", EXAMPLE], "--request-log-max-mb", "nan", "a number above 0"),
    (["serve", "--policy", EXAMPLE], "--request-log-backups", "-1", "an integer of at least 0"),
    (["envoy-config", "--policy", EXAMPLE], "--message-timeout", "0", "an integer of at least 1"),
    (["envoy-config", "--policy", EXAMPLE], "--max-streams", "-1", "an integer of at least 1"),
    (["envoy-config", "--policy", EXAMPLE], "--workers", "1.5", "an integer of at least 1"),
    (["envoy-config", "--policy", EXAMPLE], "--request-timeout", "inf", "a number above 0"),
    (["envoy-config", "--policy", EXAMPLE], "--max-request-bytes", "0",
     "an integer of at least 1"),
    (["simulate", "--scenario", TWIN], "--requests", "-5", "an integer of at least 1"),
    (["simulate", "--scenario", TWIN, "--live"], "--seconds", "0", "a number above 0"),
    (["demo"], "--rate", "-5", "a number above 0"),
    (["demo"], "--duration", "-1", "a number of at least 0"),
])
def test_a_count_or_duration_out_of_range_exits_2_naming_the_flag(
        capsys: pytest.CaptureFixture[str], argv: list[str], flag: str, value: str,
        want: str) -> None:
    """`simulate --requests -5` ran all but the last 5 requests, `serve --max-streams 0`
    started a router that refuses every stream, `demo --rate -5` ended in a traceback."""
    with pytest.raises(SystemExit) as done:
        main([*argv, flag, value])
    assert done.value.code == 2
    assert f"argument {flag}: {value!r}: want {want}" in capsys.readouterr().err


def test_the_bounds_are_the_ones_stated() -> None:
    one = number(int, 1)
    assert one("1") == 1 and one("4096") == 4096
    zero_or_more = number(float, 0)
    assert zero_or_more("0") == 0.0 and zero_or_more("2.5") == 2.5
    assert POSITIVE("0.001") == 0.001
    for check, value in ((one, "0"), (one, "1.0"), (zero_or_more, "-0.1"), (POSITIVE, "0"),
                         (POSITIVE, "-inf"), (POSITIVE, "x")):
        with pytest.raises(argparse.ArgumentTypeError):
            check(value)
