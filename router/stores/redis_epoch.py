"""How a Redis budget store that forgot is found out and rebuilt (`router.stores.redis`).

Theory of operation
-------------------
Redis can lose what it held while the routers keep running: `FLUSHALL`, a
restart without its AOF, a restore from an older snapshot, a failover to a
replica that had not caught up. A router that went on trusting it would see
every tenant's spend back at zero and lease the whole limit again.

- **Epoch.** The store holds one epoch: an id and `gen`, its count of budget
  writes. A router adopts the id at first contact and names it, with the
  highest `gen` it has seen, in every script (`redis_lua`); a script refuses
  to run when the id is gone or differs, or `gen` went back. So the first
  call after a loss fails, whatever it was, and writes nothing: a store that
  forgot grants no lease.
- **Until rebuilt**, the router admits only within the lease it already
  holds: that lease was headroom before the loss, so spending it passes no
  limit; then it is throttled, as with Redis down.
- **Proofs.** For each book the router keeps what it last read of the fleet's
  committed spend, at which `gen` of which epoch, and every change it wrote
  to committed spend after that read (`Proofs`). That is its journal.
- **Rebuild.** The router adopts a new epoch (the first to notice starts it,
  with a `hold`: no lease grows for `rebuild` seconds, time for every router
  to bring its proofs) and sends each book's proof (REBUILD). The store keeps
  every proof under a name of its own and sets the book's floor to the
  freshest read plus every change written after it: N routers sending proofs,
  or one sending it twice, count nothing twice. Each router's lease is
  registered again, so leases granted after the hold leave it backed.

The period never starts over: what is lost is at most the spend of a router
that stopped before it could send its proof and that no other router had read.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis

from router.core.budget import BudgetLedger

if TYPE_CHECKING:
    from router.stores.redis import RedisBudgetStore

log = logging.getLogger(__name__)
EPOCH_KEY = "hr:budget:epoch"
Book = tuple[str, str]


@dataclass
class Proof:
    """What this router can prove of one book: a read of committed spend and its own writes."""

    epoch: str
    gen: int = -1  # the store's write count at the read
    committed: float = 0.0
    after: list[tuple[int, float]] = field(default_factory=list)  # (gen, USD) written since


class Proofs:
    """Every book's proof, kept current from the store's replies (the keeper's thread)."""

    def __init__(self) -> None:
        """No books yet."""
        self.books: dict[Book, Proof] = {}

    def _proof(self, book: Book, epoch: str) -> Proof:
        proof = self.books.get(book)
        if proof is None or proof.epoch != epoch:
            proof = self.books[book] = Proof(epoch)
        return proof

    def read(self, book: Book, epoch: str, gen: int, committed: float) -> None:
        """The store said `committed` at write `gen`: writes up to it are in that figure."""
        proof = self._proof(book, epoch)
        if gen >= proof.gen:
            proof.gen, proof.committed = gen, committed
            proof.after = [(g, usd) for g, usd in proof.after if g > gen]

    def wrote(self, book: Book, epoch: str, gen: int, usd: float) -> None:
        """This router's write `gen` changed the book's committed spend by `usd`."""
        proof = self._proof(book, epoch)
        if gen > proof.gen and usd != 0.0:
            proof.after.append((gen, usd))

    def forget(self, keep: set[Book]) -> None:
        """Drop the proofs of books that neither the ledger nor the current period keeps."""
        for book in set(self.books) - keep:
            del self.books[book]


def persistence(client: redis.Redis) -> tuple[str, str]:
    """(appendonly, save) as Redis reports them, in one round trip; ('?', why) when it
    will not say."""
    pipe = client.pipeline(transaction=False)
    pipe.config_get("appendonly")
    pipe.config_get("save")
    try:
        aof, save = pipe.execute()
    except redis.ResponseError as exc:
        return "?", str(exc)
    return str(aof.get("appendonly", "")), str(save.get("save", ""))


def persistence_problem(aof: str, save: str) -> str | None:
    """Why a Redis with these settings would forget spend on a restart, or None."""
    if aof == "yes":
        return None
    if aof == "?":
        return f"cannot read its persistence settings ({save})"
    if save:
        return (f"appendonly is off (RDB snapshots only, save '{save}'): spend since "
                "the last snapshot would be lost on a Redis restart")
    return "appendonly is off and save is empty: every period's spend is lost on restart"


def lost_reason(reply: str, known: str) -> str:
    """What an `HREPOCH <id> <gen>` refusal means, for the log."""
    _, _, rest = reply.partition("HREPOCH ")
    now_id, _, gen = rest.strip().partition(" ")
    if now_id == "-":
        return (f"its budget epoch {known} is gone: the store was flushed or restarted "
                "without its data")
    if now_id != known:
        return (f"its budget epoch is now {now_id}, not {known}: another router found the "
                "store had lost its state")
    return (f"its write count went back to {gen}: restored from an older snapshot, or failed "
            "over to a replica that had not caught up")


def adopt(store: RedisBudgetStore, after_loss: bool) -> str:
    """Adopt the store's epoch, starting a new one if this router's is gone; 'new'/'adopted'."""
    hold_ms = int(store.opts["rebuild"] * 1000) if after_loss else 0
    reply = store.run("epoch", lambda: store.scripts["adopt"](keys=[EPOCH_KEY], args=[
        store.epoch if after_loss else "", secrets.token_hex(8), store.seen, hold_ms]))
    epoch, gen, how = str(_text(reply[0])), int(reply[1]), str(_text(reply[2]))
    store.epoch, store.seen = epoch, gen
    return how


def _text(x: object) -> object:
    return x.decode() if isinstance(x, bytes) else x


def rebuild(store: RedisBudgetStore, ledger: BudgetLedger | None) -> str:
    """After a loss: adopt a new epoch and send every book's proof and lease; what was sent."""
    old = store.epoch
    how = adopt(store, after_loss=True)
    if how == "same":
        return f"epoch {old} is intact after all; nothing to rebuild"
    now = store.clock()
    leases = {(v.account, v.period): v.lease if now < v.lease_until else v.in_use
              for v in (ledger.leases() if ledger is not None else [])}
    books = set(store.proofs.books) | {b for b, usd in leases.items() if usd > 0}
    standing = _send(store, ledger, sorted(books), leases) if books else []
    shown = ", ".join(f"{t}/{p} {usd:.6f} USD" for (t, p), usd in standing[:5])
    more = f" and {len(standing) - 5} more" if len(standing) > 5 else ""
    return (f"rebuilt {len(books)} budget books from this router's journal under epoch "
            f"{store.epoch} ({how} epoch; committed now: {shown or 'none'}{more}); no lease "
            f"grows until {store.opts['rebuild']:g} s after the epoch began")


def _send(store: RedisBudgetStore, ledger: BudgetLedger | None, books: list[Book],
          leases: dict[Book, float]) -> list[tuple[Book, float]]:
    batch = store.batch()
    wall = time.time()
    ttl_ms = int(store.opts["lease_ttl"] * 1000)
    for book in books:
        proof = store.proofs.books.get(book) or Proof("")
        pairs = [x for g, usd in proof.after for x in (g, repr(usd))]
        batch.add("rebuild", [*store.keys(*book), _proof_key(*book)],
                  [store.token, store.member, proof.epoch, proof.gen, repr(proof.committed),
                   repr(leases.get(book, 0.0)), ttl_ms, store.expiry(book[1], wall),
                   len(proof.after), *pairs, *store.tail()])
    replies = store.run("rebuild", batch.send)
    out = []
    for book, reply in zip(books, replies, strict=True):
        committed, gen = float(reply[0]), int(reply[3])
        store.seen = max(store.seen, gen)
        store.proofs.read(book, store.epoch, gen, committed)
        if ledger is not None:
            ledger.seen(*book, committed)
        out.append((book, committed))
    return out


def _proof_key(tenant: str, period: str) -> str:
    return f"hr:budget:{{{tenant}|{period}}}:proof"
