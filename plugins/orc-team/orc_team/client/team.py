"""Team mode's locker: the team server first, the file lease whenever it cannot be reached.

``TeamLocker`` is orc-git's CompositeLocker(WebSocketLocker, FileLocker) plus what a lease needs
over its whole life, not just at acquire:

* **Fallback mid-lease.**  A heartbeat the server cannot take (killed, unreachable) moves the lease
  to the file lock at once (warning), so the run goes on.  Only LockerUnavailable does that; a
  refusal is a refusal.
* **Re-assertion.**  Every heartbeat of a fallback lease renews the file lease, then tries the
  server: granted (an extension when the server still had our lease) moves the lease back and
  releases the file lease.
* **Split brain, surfaced.**  If someone else holds the lock on the server, or held it while we
  were away (the fencing token jumped), both sides believed they held the task.  That is logged at
  ERROR and the heartbeat raises LeaseLost with "split brain" in the message, so a
  :class:`orc_git.lease.Lease` is marked lost and ``lease.check()`` raises.  Never hidden.

The file lease is per clone (``.orc/tasks``), so while the server is away it only keeps holders
on this machine apart: that is exactly why the return of the server is checked, not assumed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from orc_git.errors import LeaseLost, LockerUnavailable, LockHeld, NotOwner, OrcError
from orc_git.locking.base import CompositeLocker
from orc_git.locking.info import LockInfo

from orc_team.client.locker import WebSocketLocker

if TYPE_CHECKING:
    from orc_git.locking.filelocker import FileLocker
    from orc_git.plugin.hookspecs import LockerContext

log = logging.getLogger("orc_git.team")


class _Fallback:
    """A lease held through the file lock: its TTL and the server token it had before the
    server went away (None when the acquire itself fell back)."""

    __slots__ = ("server_token", "ttl")

    def __init__(self, server_token: int | None, ttl: int) -> None:
        self.server_token = server_token
        self.ttl = ttl


class TeamLocker(CompositeLocker):
    name = "team"
    primary_label = "the team server"

    def __init__(self, primary: WebSocketLocker, fallback: FileLocker,
                 factory: Callable[[int], TeamLocker] | None = None) -> None:
        super().__init__(primary, fallback)
        self.server: WebSocketLocker = primary
        self.file: FileLocker = fallback
        self._factory = factory
        self._fallen: dict[str, _Fallback] = {}
        self._guard = threading.Lock()
        self._task_locks: dict[str, threading.RLock] = {}

    def for_pid(self, pid: int) -> TeamLocker:
        """The locker of holder process ``pid`` (``Context.locker(pid)`` calls this)."""
        if self._factory is None:
            raise OrcError("this team locker cannot speak for another process")
        return self._factory(pid)

    def _task(self, task_id: str) -> threading.RLock:
        """One task's heartbeat, fallback and release never interleave (the heartbeat thread
        against a release from the main thread)."""
        with self._guard:
            return self._task_locks.setdefault(task_id, threading.RLock())

    def on_fallback(self, task_id: str) -> bool:
        return self._granted_by.get(task_id) is self.file

    def can_force(self, task_id: str) -> bool | None:
        """The token's role decides, even while the server is away and the file lease answers:
        a member's force there would only become a split brain when the server is back."""
        return self.server.can_force(task_id)

    # -- acquire and heartbeat ---------------------------------------------------------------

    def acquire(self, task_id: str, *, ttl: int | None = None, force: bool = False) -> LockInfo:
        with self._task(task_id):
            info = super().acquire(task_id, ttl=ttl, force=force)
            if self.on_fallback(task_id):
                self._fallen[task_id] = _Fallback(None, info.ttl or ttl or self.server.ttl)
            return info

    def heartbeat(self, task_id: str) -> LockInfo:
        with self._task(task_id):
            route = self._granted_by.get(task_id)
            if route is None:
                return self._heartbeat_foreign(task_id)
            if route is self.file:
                self._from(self.file)
                return self._heartbeat_fallback(task_id)
            try:
                self._from(self.server)
                return self.server.heartbeat(task_id)
            except LockerUnavailable as exc:
                self._fell_back(exc, "the lease is now held by")
                return self._fall_back(task_id, exc)
            except LeaseLost:
                self._granted_by.pop(task_id, None)
                raise

    def _fall_back(self, task_id: str, exc: LockerUnavailable) -> LockInfo:
        held = self.server.forget(task_id)
        ttl = held.ttl if held is not None else self.server.ttl
        try:
            info = self.file.acquire(task_id, ttl=ttl)
        except LockHeld as held_exc:
            self._granted_by.pop(task_id, None)
            who = held_exc.lock.who() if held_exc.lock else "another holder"
            raise self._split(f"{task_id}: split brain: this process holds the lock on the team "
                              f"server, which is unreachable ({exc.message}), and {who} holds "
                              "the file lease here") from None
        self._granted_by[task_id] = self.file
        self._fallen[task_id] = _Fallback(held.token if held else None, ttl)
        log.warning("%s: lock server unavailable (%s); holding the file lease (token %s) until "
                    "it is back", task_id, exc.message, info.token)
        return info

    def _heartbeat_fallback(self, task_id: str) -> LockInfo:
        try:
            info = self.file.heartbeat(task_id)
        except LeaseLost:
            self._granted_by.pop(task_id, None)
            self._fallen.pop(task_id, None)
            raise
        fallen = self._fallen.get(task_id) or _Fallback(None, info.ttl or self.server.ttl)
        try:
            server = self.server.acquire(task_id, ttl=fallen.ttl)
        except LockerUnavailable:
            return info  # still away: keep the file lease
        except LockHeld as exc:
            self._end_fallback(task_id, release_server=False)
            who = exc.lock.who() if exc.lock else "another holder"
            token = exc.lock.token if exc.lock else None
            raise self._split(f"{task_id}: split brain: this process held the file lease while "
                              f"the team server was unreachable, but on the server {who} holds "
                              f"the lock (token {token})") from None
        except OrcError as exc:
            log.warning("%s: could not re-assert the lease on the team server: %s", task_id,
                        exc.message)
            return info
        before = fallen.server_token
        if before is not None and server.token not in (before, before + 1):
            self._end_fallback(task_id, release_server=True)
            raise self._split(f"{task_id}: split brain: while the team server was unreachable "
                              f"another holder had the lock there (token {before} -> "
                              f"{server.token})")
        self._release_file(task_id)
        self._granted_by[task_id] = self.server
        self._fallen.pop(task_id, None)
        log.warning("%s: back on the team server (token %s); file lease released", task_id,
                    server.token)
        return server

    def _heartbeat_foreign(self, task_id: str) -> LockInfo:
        """``orc lock heartbeat`` from a new process, for a lease taken by an earlier one."""
        try:
            self._from(self.server)
            return self.server.heartbeat(task_id)
        except LockerUnavailable as exc:
            log.warning("%s: lock server unavailable (%s); renewing the file lease", task_id,
                        exc.message)
            self._fell_back(exc, "renewed in")
            return self.file.heartbeat(task_id)
        except NotOwner:
            mine = self.file.is_locked(task_id)
            if not (mine.locked and mine.mine and not mine.stale):
                raise
        # A file lease from a fallback, while the server does not know it: renew, move back.
        info = self.file.heartbeat(task_id)
        try:
            server = self.server.acquire(task_id, ttl=info.ttl or self.server.ttl)
        except LockHeld as exc:
            who = exc.lock.who() if exc.lock else "another holder"
            raise self._split(f"{task_id}: split brain: you hold the file lease taken while the "
                              f"team server was unreachable, but on the server {who} holds the "
                              "lock") from None
        self._release_file(task_id)
        log.warning("%s: back on the team server (token %s); file lease released", task_id,
                    server.token)
        return server

    # -- release -----------------------------------------------------------------------------

    def release(self, task_id: str, *, force: bool = False) -> bool:
        with self._task(task_id):
            route = self._granted_by.pop(task_id, None)
            self._fallen.pop(task_id, None)
            if route is not None:
                self._from(route)
            if route is self.file:
                released = self.file.release(task_id, force=force)
                self._release_server_quietly(task_id)
                return released
            if route is self.server:
                try:
                    return self.server.release(task_id, force=force)
                except LockerUnavailable as exc:
                    log.warning("%s: could not release on the team server (%s); it expires "
                                "there after its TTL", task_id, exc.message)
                    return False
            return self._release_foreign(task_id, force)

    def _release_foreign(self, task_id: str, force: bool) -> bool:
        """``orc lock release``: the server's lease, and this user's file lease if a fallback
        left one (both may exist after a split brain)."""
        refused: NotOwner | None = None
        released = False
        try:
            self._from(self.server)
            released = self.server.release(task_id, force=force)
        except LockerUnavailable as exc:
            log.warning("%s: lock server unavailable (%s); releasing the file lease", task_id,
                        exc.message)
            self._fell_back(exc, "released from")
            return self.file.release(task_id, force=force)
        except NotOwner as exc:
            refused = exc
        file_released = self._release_file(task_id, force=force)
        if refused is not None and not file_released:
            raise refused
        return released or file_released

    def _release_file(self, task_id: str, force: bool = False) -> bool:
        current = self.file.is_locked(task_id)
        if not current.locked or not (current.mine or force):
            return False
        try:
            return self.file.release(task_id, force=force)
        except NotOwner:
            return False

    def _release_server_quietly(self, task_id: str) -> None:
        """A fallback lease ends: if the server came back still holding this holder's lease
        from before the outage (not re-asserted yet), free it now rather than at its TTL."""
        self.server.release_own(task_id)

    def _end_fallback(self, task_id: str, *, release_server: bool) -> None:
        """After a split brain: give up both sides; the holder is told by LeaseLost."""
        self._granted_by.pop(task_id, None)
        self._fallen.pop(task_id, None)
        if release_server:
            self.server.release_own(task_id)
        self._release_file(task_id)

    @staticmethod
    def _split(message: str) -> LeaseLost:
        log.error("%s", message)
        return LeaseLost(message)

    # -- reads -------------------------------------------------------------------------------

    def clean(self) -> list[LockInfo]:
        """The server expires its own leases; stale file leases left by fallbacks are cleaned."""
        self._from(self.server)
        return self.server.clean() + self.file.clean()

    def close(self) -> None:
        self.server.close()


def team_locker(context: LockerContext, pid: int | None = None) -> TeamLocker:
    """Team mode's locker for holder process ``pid`` (default: this process).  Cheap: nothing
    connects until the first lock operation."""
    from orc_team.client.autosync import deliver_after
    from orc_team.client.holder import client_id, self_holder_id
    from orc_team.client.settings import settings_from_config

    settings = settings_from_config(context.config)
    cid = self_holder_id() if pid is None else client_id(pid)
    primary = WebSocketLocker(settings, cid, ttl=context.ttl, events=context.emit,
                              user_owns=pid is not None, handover=context.handover)
    deliver_after(context, primary.client)  # a backlog in the outbox goes once we connect
    return TeamLocker(primary, context.file_locker(pid),
                      factory=lambda other: team_locker(context, other))
