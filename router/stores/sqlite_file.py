"""The SQLite budget file itself: its options, its lock, and finding it deleted or replaced.

Theory of operation
-------------------
A `sqlite:` store's router keeps every account in memory and admits from there,
so a file that goes away does not reset admission while the router runs; it
resets it at the next start, which reads an empty or older file. And SQLite
cannot tell: a deleted file's open descriptor takes every write without error,
into a file no one will open again.

So at open the store notes the file's identity (device, inode), and before
every write and on every keeper round checks it: no file at the path, or
another file there (renamed over it, restored from a backup), is a loss. The
keeper then has the store rebuild: the old connection is dropped, the file at
the path is opened (created if gone) and locked, and every account this process
holds — bill, settled total, the settlements the bill does not cover — and
every hold in flight are written into it in one transaction, over whatever rows
it had for the same accounts. Accounts only the file knows are left as they
are. Nothing the process held is lost. (A file copied over in place, keeping
its inode, is not seen: SQLite in WAL mode reads its own cache, and the copy
corrupts the database anyway.)
"""

from __future__ import annotations

import fcntl
import math
import os
from collections.abc import Iterable
from pathlib import Path

from router.core.budget import Account, Reservation
from router.stores.keeper import BudgetStoreError

Stmt = tuple[str, tuple[object, ...]]


def spec(path: str | Path, synchronous: str) -> tuple[Path, str]:
    """(the file, its `synchronous` mode) from `PATH[?synchronous=MODE]`."""
    text = str(path)
    if "?" in text:
        text, _, query = text.partition("?")
        for part in query.split("&"):
            name, _, value = part.partition("=")
            if name != "synchronous":
                raise BudgetStoreError(f"sqlite:{path}: unknown option {name!r}")
            synchronous = value
    if synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
        raise BudgetStoreError(f"sqlite:{path}: synchronous must be NORMAL, FULL or EXTRA")
    return Path(text), synchronous.upper()


def lock(path: Path) -> int:
    """Hold PATH.lock exclusively (one writer per file); the fd, or BudgetStoreError."""
    name = path.with_name(path.name + ".lock")
    fd = os.open(name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise BudgetStoreError(
            f"budget store sqlite:{path} is in use by another process (pid {holder}, lock "
            f"{name}): one router per sqlite: file; stop that one, or share the budget "
            "through a redis:// store") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at `path`, or None when there is none."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st.st_dev, st.st_ino


def loss(path: Path, ident: tuple[int, int] | None) -> str | None:
    """Why the file at `path` is no longer the one this store opened, or None."""
    now = identity(path)
    if now is None:
        return "its file was deleted"
    if now != ident:
        return "its file was replaced by another (renamed over it, restored from a backup)"
    return None


def rows(accounts: dict[tuple[str, str], Account], holds: Iterable[Reservation]
         ) -> list[Stmt]:
    """Statements that write `accounts` and `holds` over a file's rows for the same keys."""
    out: list[Stmt] = []
    for (tenant, period), acct in accounts.items():
        key = (tenant, period)
        as_of = None if acct.billed_as_of == -math.inf else acct.billed_as_of
        out += [("DELETE FROM unbilled WHERE tenant=? AND period=?", key),
                ("INSERT OR REPLACE INTO account (tenant, period, billed, billed_as_of, settled)"
                 " VALUES (?,?,?,?,?)", (*key, acct.billed, as_of, acct.settled))]
        out += [("INSERT INTO unbilled (tenant, period, second, usd) VALUES (?,?,?,?)",
                 (*key, second, usd)) for second, usd in acct.unbilled]
    out += [("INSERT OR REPLACE INTO hold (tenant, period, rid, at, usd) VALUES (?,?,?,?,?)",
             (r.tenant, r.period, r.rid, r.at, r.amount)) for r in holds]
    return out
