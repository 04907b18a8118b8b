"""Work handed to a worker thread that still gets the GIL while the event loop never rests.

CPython gives the GIL to a waiting thread when the holder drops it on a switch request, and
a waiter asks for one only after a whole switch interval passes without being woken. A
saturated event loop releases the GIL around every `select(0)` and takes it straight back;
each release wakes a waiter, which finds the GIL taken again and starts its interval over.
It never asks, and it runs only when it wins a race against a thread already on a core.
Measured here with a loop routing requests non-stop: a policy reload waited more than
10 s for the process pool's manager thread to hand the read to the policy worker, and
a table rebuild stalled the same way.

So while the work is outstanding, the loop checks every `PERIOD_S` how busy it was. If its
own CPU time covered at least `BUSY` of the period (it never slept, so nobody else got
the GIL), it steps aside for at most `SLICE_S`, blocking on the work's completion. That
frees the GIL and returns at once if the work finishes. Every thread waiting for the GIL
gets a turn: the work itself, and the pool threads it may be waiting on. The loop pays at
most one slice plus one switch interval per period. It pays only while work is outstanding
and it was saturated; a loop with idle time lets waiters in on its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")
PERIOD_S = 0.01
SLICE_S = 0.002
BUSY = 0.9


async def offload(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)` in the loop's default executor, as `asyncio.to_thread` does
    (the caller's context variables included), with the loop stepping aside while it is
    saturated (see the module docstring)."""
    loop = asyncio.get_running_loop()
    finished = threading.Event()
    ctx = contextvars.copy_context()

    def run() -> T:
        try:
            return ctx.run(fn, *args, **kwargs)
        finally:
            finished.set()

    future = loop.run_in_executor(None, run)
    wall, cpu = time.monotonic(), time.thread_time()
    while True:
        done, _ = await asyncio.wait({future}, timeout=PERIOD_S)
        if done:
            return future.result()
        now, spent = time.monotonic(), time.thread_time()
        if spent - cpu >= BUSY * (now - wall):
            finished.wait(SLICE_S)  # no GIL held: whoever waits for it runs
        wall, cpu = time.monotonic(), time.thread_time()
