"""What a watch that listed again may have missed: objects deleted in the gap.

Kopf resumes a broken watch from the last resourceVersion it saw; when the API server no longer
has that version (410 Gone: always after a kube-apiserver restart, whose watch cache starts
empty), Kopf lists everything again and passes each listed object to the handlers with no event
type. An object deleted before that list was taken sends no DELETED event, and Kopf keeps it in
its indexes: the operator would go on believing in a CronJob someone deleted (never recreating
it) or in a CronTask that is gone.

``RelistTracker`` notices such a second listing (an object listed again that the operator had
already seen) and, once the listing has gone quiet, names the suspects: the cached keys of each
kind listed again that no event has shown since the listing began (every namespace: one whose
objects were all deleted lists nothing). The controller asks the API server about each suspect
(a list narrowed to its name, which the RBAC already allows) and treats the confirmed ones as
deleted. It costs nothing while the watches run; after a re-list, a request per deleted object
(per cached object of the namespaces whose own watch had not listed again yet, when the
operator watches namespaces one by one); a fresh operator's first listing is no re-list.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

Key = tuple[str, str]
KINDS = ("crontasks", "cronjobs")

QUIET_SECONDS = 3.0
"""How long after the last listed object a re-list counts as over (Kopf passes a list chunk
after chunk; anything missed by ending early is only asked about once more)."""


@dataclass
class RelistTracker:
    """Pure bookkeeping of which keys the watches have shown; no I/O, no clock of its own."""

    known: dict[str, set[Key]] = field(default_factory=lambda: {k: set() for k in KINDS})
    """Keys each watch has shown and not deleted since."""
    seen: dict[str, set[Key]] | None = None
    """During a re-list: keys shown since it began (None: no re-list under way)."""
    kinds: set[str] = field(default_factory=set)
    """During a re-list: the kinds whose objects were listed again."""
    last_listed: float = 0.0
    """When the last listed object arrived (the caller's monotonic clock)."""

    def event(self, kind: str, key: Key, event_type: str | None, now: float) -> bool:
        """Record one watch event; True when it starts a re-list."""
        known = self.known.setdefault(kind, set())
        started = False
        if event_type == "DELETED":
            known.discard(key)
            return False
        if event_type is None and key in known and self.seen is None:
            self.seen = {k: set() for k in KINDS}
            self.kinds = set()
            started = True
        known.add(key)
        if self.seen is not None:
            self.seen.setdefault(kind, set()).add(key)
            if event_type is None:
                self.kinds.add(kind)
                self.last_listed = now
        return started

    def quiet_in(self, now: float) -> float:
        """Seconds until the re-list under way has gone quiet (0: it has, or there is none)."""
        if self.seen is None:
            return 0.0
        return max(0.0, self.last_listed + QUIET_SECONDS - now)

    def suspects(self, cached: dict[str, Iterable[Key]]) -> dict[str, list[Key]]:
        """End the re-list: per kind listed again, the cached keys that no event has shown
        since it began (sorted; each may be gone)."""
        seen, kinds = self.seen or {}, self.kinds
        self.seen, self.kinds = None, set()
        return {kind: sorted(k for k in keys if k not in seen.get(kind, set()))
                if kind in kinds else [] for kind, keys in cached.items()}
