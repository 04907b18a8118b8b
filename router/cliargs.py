"""Values on the command line, checked before anything starts: addresses and numbers.

gRPC takes a port past 65535 modulo 65536 (`--grpc 127.0.0.1:99999` listens on 34463,
without a word), Python's servers die on it with a traceback, and Envoy refuses a config
naming it only when it loads it; a count of 0 workers or streams, or a negative timeout, was
taken as given and ran until something failed far from the flag. So every flag that names
an address is typed with `address` and every count or duration with `number`, and argparse
exits 2 naming the flag and what it takes.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from router.core.fleet import valid_hostport


def address(*words: str, unix: bool = True, listen: bool = True) -> Callable[[str], str]:
    """An argparse type: HOST:PORT with a port of 1 to 65535, or 0 (the kernel's pick) for an
    address to `listen` on; `unix:PATH` when `unix`; or one of `words` (`off`, `shared`)."""
    ports = "0-65535" if listen else "1-65535"
    forms = [f"HOST:PORT (port {ports})", *(["unix:PATH"] if unix else []), *words]

    def check(value: str) -> str:
        if value in words or (unix and value.startswith("unix:") and len(value) > 5):
            return value
        host, sep, port = value.rpartition(":")
        if listen and sep and port == "0" and valid_hostport(f"{host}:1"):
            return value
        if valid_hostport(value):
            return value
        raise argparse.ArgumentTypeError(f"{value!r}: want {' or '.join(forms)}")
    return check


def number(kind: type[int] | type[float], low: float, *, above: bool = False,
           high: float = math.inf) -> Callable[[str], int | float]:
    """An argparse type: an int or float at least `low` (above it, when `above`), at most
    `high`."""
    what = "an integer" if kind is int else "a number"
    if high < math.inf:  # written out whole: a seed's 4294967295, not 4.29497e+09
        want = f"{what} from {low:g} to {high:.0f}" if float(high).is_integer() else \
            f"{what} from {low:g} to {high:g}"
    else:
        want = f"{what} {'above' if above else 'of at least'} {low:g}"

    def check(value: str) -> int | float:
        try:
            n = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r}: want {want}") from None
        if not math.isfinite(n) or n < low or (above and n == low) or n > high:
            raise argparse.ArgumentTypeError(f"{value!r}: want {want}")
        return n
    return check


POSITIVE = number(float, 0, above=True)  # a timeout, a size
