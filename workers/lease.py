"""The device lease: one measurement at a time per device, whatever Redis does.

A lease, not a lock for the whole job: renewed while the job runs, it lapses within ``lease_s`` of
a worker's death, so a dead worker does not block its device for a time limit. Its expiry runs on
Redis's clock, also while this worker cannot reach Redis (a paused or partitioned server): a
holder that cannot renew must stop measuring *before* the lease can lapse, or a second worker
takes the device while the first still measures on it. So the holder keeps its own deadline
(``must_stop_at``, half the lease before the earliest moment Redis could expire it),
measured from when it *sent* its last confirmed renewal, and the job stops its measuring process
there; when Redis answers again it takes the lease back if nobody else did (it was free, so
nothing else measured), else hands the job back to its queue.
"""

from __future__ import annotations

import contextlib
import logging
import time

import redis

from dnnprof import keys
from dnnprof.store import ProfileStore, with_retries

log = logging.getLogger(__name__)

#: Calls on the lease give up this soon, so a hung Redis cannot hold the loop past its deadline.
LEASE_CALL_TIMEOUT_S = 1.0


class LeaseInDoubt(Exception):
    """This job can no longer be sure it holds the device: its measurement stops now."""


class DeviceLease:
    def __init__(self, store: ProfileStore, name: str, lease_s: int) -> None:
        self.name = name
        self.lease_s = lease_s
        #: The store on connections that give up quickly: the lease and the loop's other calls.
        self.store = store.with_timeout(LEASE_CALL_TIMEOUT_S)
        self._lock = self.store.redis.lock(
            keys.device_lock(name), timeout=lease_s, blocking_timeout=1, thread_local=False
        )
        self._confirmed_at = float("-inf")  # monotonic time the last confirmed call was sent
        self._away_since: float | None = None

    def acquire(self) -> bool:
        sent = time.monotonic()
        if not self._lock.acquire():
            return False
        self._confirmed_at = sent
        return True

    def release(self) -> None:
        with contextlib.suppress(redis.exceptions.RedisError):  # lapsed or Redis away: it expires
            self._lock.release()

    @property
    def must_stop_at(self) -> float:
        """Redis may expire the lease from ``confirmed + lease_s`` on; stop well before (half
        the lease: one renewal missed and half of the next, with a call's timeout to spare)."""
        return self._confirmed_at + self.lease_s / 2

    def keep(self) -> bool:
        """Renew when a renewal is due (every third of the lease). True when the lease is
        confirmed now; False when Redis did not answer (the caller checks :meth:`check`).
        Raises :class:`LeaseInDoubt` when another job holds the device."""
        if time.monotonic() - self._confirmed_at < self.lease_s / 3:
            return True
        sent = time.monotonic()
        try:
            held = self._take_or_extend()
        except redis.exceptions.RedisError as exc:
            if self._away_since is None:
                self._away_since = sent
                log.warning("could not renew the device lease %s (%s); retrying", self.name, exc)
            return False
        if not held:
            log.error("the device lease %s is held by another job: this measurement stops", self.name)
            raise LeaseInDoubt(f"another job holds the device lease {self.name}")
        if self._away_since is not None:
            log.warning(
                "renewed the device lease %s after %.0f s without Redis", self.name, sent - self._away_since
            )
            self._away_since = None
        self._confirmed_at = sent
        return True

    def check(self) -> None:
        """Raises :class:`LeaseInDoubt` once the lease may lapse before a renewal lands."""
        if time.monotonic() >= self.must_stop_at:
            raise LeaseInDoubt(
                f"the device lease {self.name} could not be renewed for "
                f"{time.monotonic() - self._confirmed_at:.0f} s (Redis away)"
            )

    def regain(self, until_s: float) -> bool:
        """After a stop: wait for Redis (up to ``until_s``), then hold the lease again if it is
        ours or free (True), or say another job took the device (False)."""

        def attempt() -> bool:
            sent = time.monotonic()
            if not self._take_or_extend():
                return False
            self._confirmed_at = sent
            return True

        regained = with_retries(
            attempt, until_s=until_s, what=f"taking back the device lease {self.name}", max_backoff_s=0.5
        )
        self._away_since = None
        log.warning(
            "device lease %s %s", self.name, "taken back: nobody measured meanwhile" if regained else "lost"
        )
        return regained

    def _take_or_extend(self) -> bool:
        """Extend the lease if it is still ours; take it if it lapsed and nobody took it."""
        try:
            self._lock.reacquire()
            return True
        except redis.exceptions.LockNotOwnedError:
            return bool(self._lock.do_acquire(self._lock.local.token))
