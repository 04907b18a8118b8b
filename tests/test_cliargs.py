"""Addresses, counts and durations on every command line are checked before anything
starts: a value out of range exits 2 naming the flag and what it takes."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from router.cli import build_parser, main
from router.cliargs import POSITIVE, number

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = str(ROOT / "policies" / "example.yaml")
TWIN = str(ROOT / "simulator" / "scenarios" / "twin.yaml")


SERVE, ENVOY = ["serve", "--policy", EXAMPLE], ["envoy-config", "--policy", EXAMPLE]
PLAN = ["plan", "--scenario", TWIN, "--space", str(ROOT / "simulator" / "scenarios" / "spaces" /
        "camera.yaml"), "--slo", "0.9", "--out", str(ROOT / "no-such-plan-dir")]
LISTEN, REACH = "HOST:PORT (port 0-65535)", "HOST:PORT (port 1-65535)"


@pytest.mark.parametrize(("argv", "flag", "value", "want"), [
    # gRPC took 127.0.0.1:99999 as port 34463 (modulo 65536) and listened there
    (SERVE, "--grpc", "127.0.0.1:99999", f"{LISTEN} or unix:PATH"),
    (SERVE, "--grpc", "garbage", f"{LISTEN} or unix:PATH"),
    (SERVE, "--grpc", "unix:", f"{LISTEN} or unix:PATH"),
    (SERVE, "--metrics", "127.0.0.1:65536", f"{LISTEN} or off"),
    (SERVE, "--metrics", "unix:/tmp/m.sock", f"{LISTEN} or off"),
    (SERVE, "--xds", "127.0.0.1:-1", f"{LISTEN} or unix:PATH or shared"),
    # Envoy refused a listener past 65535 only when it loaded the config; a router address
    # of 'garbage' was a traceback; port 0 is for listening, not for reaching the router
    (ENVOY, "--listen", "127.0.0.1:99999", LISTEN),
    (ENVOY, "--admin", "127.0.0.1:70000", LISTEN),
    (ENVOY, "--admin", "unix:/tmp/admin.sock", LISTEN),
    (ENVOY, "--router", "garbage", f"{REACH} or unix:PATH"),
    (ENVOY, "--router", "127.0.0.1:0", f"{REACH} or unix:PATH"),
    (ENVOY, "--xds", "127.0.0.1:65536", f"{REACH} or unix:PATH"),
    # simulate --requests -5 ran all but the last 5 requests, serve --max-streams 0 started
    # a router that refuses every stream, demo --rate -5 ended in a traceback
    (SERVE, "--workers", "0", "an integer of at least 1"),
    (SERVE, "--max-streams", "0", "an integer of at least 1"),
    (SERVE, "--xds-max-streams", "-3", "an integer of at least 1"),
    (SERVE, "--grace", "-1", "a number of at least 0"),
    (SERVE, "--upstream-timeout", "0", "a number above 0"),
    (SERVE, "--request-log-max-mb", "nan", "a number above 0"),
    (SERVE, "--request-log-backups", "-1", "an integer of at least 0"),
    (ENVOY, "--message-timeout", "0", "an integer of at least 1"),
    (ENVOY, "--max-streams", "-1", "an integer of at least 1"),
    (ENVOY, "--workers", "1.5", "an integer of at least 1"),
    (ENVOY, "--request-timeout", "inf", "a number above 0"),
    (ENVOY, "--max-request-bytes", "0",
     "an integer of at least 1"),
    (["simulate", "--scenario", TWIN], "--requests", "-5", "an integer of at least 1"),
    (["simulate", "--scenario", TWIN, "--live"], "--seconds", "0", "a number above 0"),
    (["demo"], "--rate", "-5", "a number above 0"),
    (["explain", "--policy", EXAMPLE], "--payload-bytes", "-5", "an integer of at least 0"),
    # feed serve had its own check of the same, with its own message
    (["feed", "serve", "--from", EXAMPLE], "--listen", "127.0.0.1:70000", LISTEN),
    (["feed", "serve", "--from", EXAMPLE], "--grpc", "garbage", f"{LISTEN} or off"),
    # --poll 0 checked the file in a busy loop
    (["feed", "serve", "--from", EXAMPLE], "--poll", "0", "a number above 0"),
    (["demo"], "--duration", "-1", "a number of at least 0"),
    # plan --seed -1 (or past 32 bits) was a traceback from the search's numpy generator
    (PLAN, "--seed", "-1", "an integer from 0 to 4294967295"),
    (PLAN, "--seed", "4294967296", "an integer from 0 to 4294967295"),
    (PLAN, "--trials", "0", "an integer of at least 1"),
    (PLAN, "--jobs", "-2", "an integer of at least 1"),
    (PLAN, "--requests", "0", "an integer of at least 1"),
    # a replay's --seed and --last had checks of their own after parsing, the seed unbounded
    (["simulate", "--trace", "t.jsonl", "--policy", EXAMPLE], "--seed", "-1",
     "an integer from 0 to 4294967295"),
    (["simulate", "--trace", "t.jsonl", "--policy", EXAMPLE], "--seed", "4294967296",
     "an integer from 0 to 4294967295"),
    (["simulate", "--trace", "t.jsonl", "--policy", EXAMPLE], "--last", "0", "a number above 0"),
])
def test_a_value_out_of_range_exits_2_naming_the_flag(
        capsys: pytest.CaptureFixture[str], argv: list[str], flag: str, value: str,
        want: str) -> None:
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
    digit = number(int, 0, high=9)
    assert digit("0") == 0 and digit("9") == 9
    for check, value in ((one, "0"), (one, "1.0"), (zero_or_more, "-0.1"), (POSITIVE, "0"),
                         (POSITIVE, "-inf"), (POSITIVE, "x"), (digit, "10"), (digit, "-1")):
        with pytest.raises(argparse.ArgumentTypeError):
            check(value)


@pytest.mark.parametrize(("flag", "value"), [
    ("--grpc", "127.0.0.1:0"), ("--grpc", "[::1]:50051"), ("--grpc", "unix:/tmp/r.sock"),
    ("--metrics", "off"), ("--metrics", "0.0.0.0:9464"), ("--xds", "shared"),
    ("--xds", "localhost:65535"),
])
def test_every_form_of_listen_address_is_taken(flag: str, value: str) -> None:
    args = build_parser("serve").parse_args(["serve", "--policy", "p.yaml", flag, value])
    assert getattr(args, flag.lstrip("-")) == value
