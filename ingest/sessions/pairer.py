"""SessionPairer: the pipeline stage that turns logins and logouts into session documents.

Shaped like bytewax's ``StatefulLogic``: :meth:`SessionPairer.process_batch` is ``on_item`` for a
whole batch, :meth:`SessionPairer.expire` is ``on_notify``; the clock is injected, so tests move
time instead of sleeping. The state itself is in a :class:`SessionStore`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ingest.sessions import state as st
from ingest.sessions.doc import VERSION_FINAL, VERSION_PROVISIONAL, build, version
from ingest.sessions.events import SESSION_ACTIONS, Mark, mark_for, to_micros
from ingest.sessions.store import SessionStore, Sizes

if TYPE_CHECKING:
    from ingest.pending import PendingDocs

SessionDoc = tuple[str, dict[str, Any]]
Clock = Callable[[], datetime]

_ROLE_ORDER = {"login": 0, "attr": 1, "logout": 2}
#: Keys handled per expire()/eviction transaction.
CHUNK = 500


def utc_now() -> datetime:
    return datetime.now(UTC)


class SessionPairer:
    """Pairs session events of document batches; returns ``(doc_id, doc)`` of each closed session.

    The caller indexes each returned document under ``doc_id`` with the ``index`` op type and the
    external version :func:`ingest.sessions.doc.version` (index from the document's ``@timestamp``,
    like any event). Re-emitted documents (redelivered events) carry the same id, content and
    version: Elasticsearch answers 409, which is success; a session first closed as ``timeout`` or
    ``replaced`` and then corrected by its real logout is emitted again with a higher version.

    With ``pending`` (Redis), every document is also written there in the transaction that closes
    its session, until a batch that carried it is acknowledged (:mod:`ingest.pending`).

    Call :meth:`process_batch` before acknowledging a batch, and :meth:`expire` regularly (every
    batch or every few seconds): it closes timed-out sessions and forgets expired state.
    """

    def __init__(self, store: SessionStore, *, clock: Clock = utc_now, pending: PendingDocs | None = None) -> None:
        self.store = store
        self.pending = pending
        self.config = store.config
        self.clock = clock
        #: Running counters: opened, closed_<reason>, paired_orphan, orphaned, duplicate_login,
        #: duplicate_logout, extra_logout, attr, attr_ignored, orphan_expired, evicted_open,
        #: evicted_orphans, evicted_closed, corrected_timeout, corrected_replaced.
        self.counts: Counter[str] = Counter()

    def _now(self, now: datetime | None = None) -> int:
        return to_micros(now if now is not None else self.clock())

    def process_batch(self, docs: Iterable[dict[str, Any]]) -> list[SessionDoc]:
        """Apply every session event in ``docs``; the documents of the sessions this closed."""
        if not self.config.enabled:
            return []
        marks: list[Mark] = []
        for doc in docs:
            event = doc.get("event")  # most documents play no part: not even a call for them
            if type(event) is not dict:
                continue
            action = event.get("action")
            if action in SESSION_ACTIONS and (action != "ssh_login" or event.get("outcome") != "failure"):
                mark = mark_for(doc, action)  # (a failed ssh_login, most of a brute-force burst, is none)
                if mark is not None:
                    marks.append(mark)
        if not marks:
            return []
        marks.sort(key=lambda m: (m.ts, _ROLE_ORDER[m.role]))  # stable: same-time lines keep file order
        now = self._now()

        def run(states: dict[str, st.State]) -> st.Outcome:
            out = st.Outcome()
            for mark in marks:
                st.apply(states[mark.key], mark, now, out)
            return out

        docs_out, sizes = self._transact([m.key for m in marks], run, now)
        self._enforce_bounds(sizes, now)
        return docs_out

    def expire(self, now: datetime | None = None) -> list[SessionDoc]:
        """Close sessions open longer than ``timeout``; drop orphans and tombstones past their TTL.

        ``now`` defaults to the injected clock.
        """
        if not self.config.enabled:
            return []
        now_us = self._now(now)
        ttl = self.store.ttl
        emitted: list[SessionDoc] = []
        seen: set[str] = set()
        while True:
            keys = [k for k in self.store.due(now_us, CHUNK) if k not in seen]
            if not keys:
                break
            seen.update(keys)

            def run(states: dict[str, st.State], keys: list[str] = keys) -> st.Outcome:
                out = st.Outcome()
                for key in keys:
                    st.expire(states[key], _kind(key), key, now_us, ttl, out)
                return out

            docs, _ = self._transact(keys, run, now_us)
            emitted += docs
        return emitted

    def _enforce_bounds(self, sizes: Sizes, now: int) -> None:
        """Drop the oldest open sessions / orphans / tombstones beyond the configured maxima (no documents).

        Two workers may both see the excess and together drop up to twice as much: a bound, not a quota.
        """
        limits = (("open", sizes.open, self.config.max_open), ("orph", sizes.orph, self.config.max_orphans),
                  ("tomb", sizes.tomb, self.config.max_closed))
        for index, size, limit in limits:
            excess = size - limit
            while excess > 0:
                keys = self.store.oldest(index, min(excess, CHUNK))
                if not keys:
                    break

                def run(states: dict[str, st.State], keys: list[str] = keys, index: str = index) -> st.Outcome:
                    out = st.Outcome()
                    for key in keys:
                        st.evict(states[key], index, out)
                    return out

                outcome, _ = self.store.transact(keys, run, now)
                self.counts.update(outcome.counts)
                excess -= len(keys)

    def _transact(self, keys: Collection[str], run: Callable[[dict[str, st.State]], st.Outcome],
                  now: int) -> tuple[list[SessionDoc], Sizes]:
        """The store's transaction; with ``pending``, the documents of the sessions it closes are
        written as pending in the same MULTI/EXEC (built there: they are what the state says)."""
        pending = self.pending
        built: list[list[SessionDoc]] = []
        after = None
        if pending is not None:
            def after(pipe: Any, outcome: st.Outcome) -> None:
                docs = self._docs(outcome)
                built[:] = [docs]
                if pipe is not None and docs:
                    versions = [version(doc) for _, doc in docs]
                    pending.queue_add(pipe, [pending.session_action(i, d, v) for (i, d), v in zip(docs, versions, strict=True)],
                                      drop=[f"{i}@{VERSION_PROVISIONAL}" for (i, _), v in zip(docs, versions, strict=True)
                                            if v == VERSION_FINAL])
        outcome, sizes = self.store.transact(keys, run, now, after)
        self.counts.update(outcome.counts)
        return (built[0] if built else self._docs(outcome)), sizes

    def _docs(self, outcome: st.Outcome) -> list[SessionDoc]:
        out: list[SessionDoc] = []
        ids: set[str] = set()
        for kind, key, closed in outcome.closed:
            doc_id, doc = build(kind, key, closed)
            if doc_id not in ids:
                ids.add(doc_id)
                out.append((doc_id, doc))
        return out


def _kind(key: str) -> str:
    return key.split("|", 1)[0]


__all__ = ["Mark", "SessionPairer", "SessionDoc", "utc_now"]
