"""``WebSocketLocker``: orc-git's Locker interface, with the team server as the store.

acquire is a ``lock`` message, heartbeat a ``lock`` from the current holder (the server extends
it), release an ``unlock``; reads (is_locked, list_locks) use ``GET /api/locks``; clean has nothing
to do, since the server expires leases itself.  A refusal is an exception about the lock (LockHeld,
NotOwner, Refused: exit 1); only an unreachable server is LockerUnavailable, the one error the
team locker falls back on.

Every renewal checks the token it gets back (:mod:`orc_team.client.renewal`).  Leases stolen or
force-released on the server are announced to the holder's connections; they mark the lease lost
at once, so the next heartbeat raises.  ``orc lock heartbeat`` and ``release`` from another process
of the same user on the same host act as the lease's holder, as they may on a file lease.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from orc_git.errors import LeaseLost, LockerUnavailable, LockHeld, NotOwner, OrcError
from orc_git.handover import Handover, head_from
from orc_git.identity import process_start_time
from orc_git.locking.info import Answer, LockInfo
from orc_git.taskid import check_task_id

from orc_team import protocol
from orc_team.client.convert import held_by, lock_info, refusal, same_person_here
from orc_team.client.holder import holds_itself, parse_client_id, safe_host
from orc_team.client.http import HttpReader
from orc_team.client.renewal import Held, judge
from orc_team.client.replies import ServerError
from orc_team.client.settings import ClientSettings
from orc_team.client.wsclient import WSClient

log = logging.getLogger("orc_git.team")  # under orc_git: the CLI shows these lines on stderr

T = TypeVar("T")
EventSink = Callable[[str, str, LockInfo | None, LockInfo | None, str], None]


class WebSocketLocker:
    name = "websocket"
    answer = Answer("team")

    def __init__(self, settings: ClientSettings, client_id: str, *, ttl: int = 60,
                 events: EventSink | None = None, user_owns: bool = False,
                 handover: Handover | None = None) -> None:
        """``user_owns``: leases of this user taken by another process on this host may be
        renewed and released too (the CLI's rule, as ``FileLocker`` has it).  ``handover``
        reads the ``HEAD`` an ``unlock`` sends (none is sent without it)."""
        self.settings = settings
        self.client_id = client_id
        self.ttl = ttl
        self.user_owns = user_owns
        self.user = settings.user
        self.host = parse_client_id(client_id)[0] or safe_host()
        self._events = events
        self.handover = handover
        self._held: dict[str, Held] = {}
        self._mutex = threading.Lock()
        self.client = WSClient(settings, client_id)
        self.http = HttpReader(settings)
        self.client.on_connect(self._reassert)
        self.client.add_listener(self._on_message)
        self.client.keep_connected_while(lambda: bool(self._held))
        self.client.on_late = self._on_late

    def close(self) -> None:
        self.client.close()
        self.http.close()

    # -- helpers ---------------------------------------------------------------------------

    def _emit(self, kind: str, task_id: str, info: LockInfo | None,
              previous: LockInfo | None = None) -> None:
        if self._events is not None:
            self._events(kind, task_id, info, previous, "team")

    def _lock(self, task_id: str, ttl: int, force: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {"task_id": task_id, "ttl": ttl}
        if force:
            data["force"] = True
        if self.settings.project:
            data["project_id"] = self.settings.project
        try:
            reply = self.client.request(protocol.LOCK, data)
        except ServerError as exc:
            raise refusal(exc, task_id) from None
        result = reply.get("data")
        if not isinstance(result, dict):
            raise OrcError(f"{task_id}: the team server sent a lock_result without data")
        return result

    def _seen(self, lock: dict[str, Any]) -> LockInfo:
        info = lock_info(lock)
        info.mine = same_person_here(info, self.user, self.host)
        return info

    def _check(self, task_id: str, held: Held, result: dict[str, Any]) -> str | None:
        """Why the lease is lost according to this renewal's answer, or None (still ours)."""
        lost, give_back = judge(task_id, held, result)
        if give_back:
            self.client.send(protocol.UNLOCK, {"task_id": task_id})
        return lost

    def _drop(self, task_id: str, held: Held) -> None:
        with self._mutex:
            if self._held.get(task_id) is held:
                del self._held[task_id]
        self._emit("lost", task_id, None, held.info)

    def forget(self, task_id: str) -> Held | None:
        """Stop renewing and re-asserting a lease, without a word to the server (the team
        locker calls this when it moves the lease to the file lock)."""
        with self._mutex:
            return self._held.pop(task_id, None)

    # -- the Locker interface --------------------------------------------------------------

    def acquire(self, task_id: str, *, ttl: int | None = None, force: bool = False) -> LockInfo:
        check_task_id(task_id)
        ttl = self.ttl if ttl is None else ttl
        held = self._held.get(task_id)
        if held is not None and held.lost is None:
            raise LockHeld(f"{task_id} is already held by this process (token {held.token})",
                           held.info)
        result = self._lock(task_id, ttl, force)
        if not result.get("acquired"):
            seen = self._seen(result)
            raise LockHeld(f"{task_id} is locked by {seen.who()} since {seen.acquired_at}", seen)
        info = lock_info(result, mine=True)
        with self._mutex:
            self._held[task_id] = Held(info, info.ttl or ttl)
        if info.stolen_from:
            log.warning("%s: lease of %s stolen (forced), token %s", task_id, info.stolen_from,
                        info.token)
        self._emit("stolen" if info.stolen_from else "acquired", task_id, info)
        return info

    def heartbeat(self, task_id: str) -> LockInfo:
        held = self._held.get(task_id)
        if held is None:
            return self._heartbeat_foreign(task_id)
        if held.lost is not None:
            self._drop(task_id, held)
            raise LeaseLost(held.lost)
        problem = self._check(task_id, held, self._lock(task_id, held.ttl))
        if problem is not None:
            self._drop(task_id, held)
            raise LeaseLost(problem)
        return held.info

    def _heartbeat_foreign(self, task_id: str) -> LockInfo:
        """``orc lock heartbeat`` from a new process: renew only a lease of this very holder
        (the same client instance id); never take a free task by renewing it."""
        check_task_id(task_id)
        lock = self.http.lock(task_id).get("lock")
        if not isinstance(lock, dict):
            raise NotOwner(f"{task_id} is not locked; nothing to renew")
        if not held_by(lock, self.user, self.client_id):
            other = self._adoptable(lock, renewing=True)
            if other is not None:
                return self._as_holder(other, lambda proxy: proxy.heartbeat(task_id))
            seen = self._seen(lock)
            raise NotOwner(f"{task_id} is locked by {seen.who()}, not by this holder (on the "
                           "team server a lease belongs to the process that took it)", seen)
        info = lock_info(lock, mine=True)
        held = Held(info, info.ttl or self.ttl)
        problem = self._check(task_id, held, self._lock(task_id, held.ttl))
        if problem is not None:
            raise LeaseLost(problem)
        return held.info

    def release(self, task_id: str, *, force: bool = False) -> bool:
        check_task_id(task_id)
        held = self.forget(task_id)
        data: dict[str, Any] = {"task_id": task_id}
        if force:
            data["force"] = True
        # A forced release of a lease this process did not take records nothing: the head
        # is the holder's to leave, not ours (as a forced release of a file lease).
        head = None if force and held is None else self._head(task_id, held)
        if head is not None:
            data["head"] = head
        try:
            reply = self.client.request(protocol.UNLOCK, data)
        except ServerError as exc:
            if held is not None and exc.server_code == protocol.NOT_LOCK_OWNER:
                log.warning("%s: not released: the lease was taken over on the team server (%s)",
                            task_id, exc.server_message)
                return False
            lock = self._current(task_id)
            # FORBIDDEN: a member's --force; for the same user's own other process it adopts
            not_owner = exc.server_code in (protocol.NOT_LOCK_OWNER, protocol.FORBIDDEN)
            other = self._adoptable(lock, force=force) if lock and not_owner else None
            if other is not None:
                return self._as_holder(other, lambda proxy: proxy.release(task_id))
            if lock and not_owner and self._mine_elsewhere(lock):
                seen = self._seen(lock)
                raise NotOwner(f"{task_id} is held by the running process {seen.who()} (`orc "
                               "lock run`, `orc run` or hold()), which renews and releases it "
                               "itself; use --force to release it anyway", seen) from None
            raise refusal(exc, task_id, self._seen(lock) if lock else None) from None
        released = bool((reply.get("data") or {}).get("released"))
        if released:
            self._emit("released", task_id, None, held.info if held else None)
        elif held is not None:
            log.warning("%s: the lease had already expired on the team server", task_id)
        return released

    def _head(self, task_id: str, held: Held | None) -> dict[str, Any] | None:
        """What an ``unlock`` says of this checkout's ``HEAD``; None (the server keeps the
        last head) when it still lacks the head the lease was acquired behind, which a
        release for another process (``orc lock release``) asks the server for."""
        if self.handover is None:
            return None
        if held is not None:
            last = held.info.last_head
        else:
            try:
                last = head_from(self.http.lock(task_id).get("last_head"))
            except OrcError:
                last = None
        head = self.handover.to_leave(last)
        if head is None or head is last:
            return None
        return {"commit": head.commit, "branch": head.branch}

    def release_own(self, task_id: str) -> bool:
        """Release this holder's own lease if the server has one; never another holder's (no
        adoption, no force), never an error: for cleaning up after a fallback."""
        self.forget(task_id)
        try:
            reply = self.client.request(protocol.UNLOCK, {"task_id": task_id})
        except OrcError:
            return False
        return bool((reply.get("data") or {}).get("released"))

    def _current(self, task_id: str) -> dict[str, Any] | None:
        try:
            lock = self.http.lock(task_id).get("lock")
        except OrcError:
            return None
        return lock if isinstance(lock, dict) else None

    def _mine_elsewhere(self, lock: dict[str, Any]) -> bool:
        """A lease of this user taken by another process on this host, and this locker may act
        for such (``user_owns``: the CLI's rule, as on file leases)."""
        client = lock.get("client")
        return (self.user_owns and isinstance(client, str) and client != self.client_id
                and lock.get("owner") == self.user and parse_client_id(client)[0] == self.host)

    def _adoptable(self, lock: dict[str, Any], *, renewing: bool = False,
                   force: bool = False) -> str | None:
        """The client id to act as for :meth:`_mine_elsewhere` leases, else None.  A process
        holding its lease itself (:func:`~orc_team.client.holder.holds_itself`) is never
        renewed for, and released for only with ``force`` or once that process has ended."""
        if not self._mine_elsewhere(lock):
            return None
        client: str = lock["client"]
        if holds_itself(client) and (renewing or not (force or self._ended(client))):
            return None
        return client

    @staticmethod
    def _ended(client: str) -> bool:
        pid = parse_client_id(client)[1]
        return pid is not None and process_start_time(pid) is None

    def _as_holder(self, client_id: str, act: Callable[[WebSocketLocker], T]) -> T:
        """Run ``act`` on a short-lived locker speaking as holder ``client_id``."""
        proxy = WebSocketLocker(self.settings, client_id, ttl=self.ttl, events=self._events,
                                handover=self.handover)
        try:
            return act(proxy)
        finally:
            proxy.close()

    def is_locked(self, task_id: str) -> LockInfo:
        check_task_id(task_id)
        answer = self.http.lock(task_id)
        lock = answer.get("lock")
        if isinstance(lock, dict):
            return self._seen(lock)
        domain = answer.get("lock_domain")
        return LockInfo(task_id, lock_domain=domain if isinstance(domain, str) else None)

    def lock_domain(self, task_id: str) -> str | None:
        """The server's lock domain: this process's lease's, else as the server says it."""
        held = self._held.get(task_id)
        if held is not None and held.info.lock_domain is not None:
            return held.info.lock_domain
        return self.is_locked(task_id).lock_domain

    def list_locks(self) -> list[LockInfo]:
        return [self._seen(lock) for lock in self.http.locks() if isinstance(lock, dict)]

    def can_force(self, task_id: str) -> bool | None:
        """The server grants ``force`` to the admin role only (DESIGN): the token says which
        this holder has; None for a token that names no role (the server decides)."""
        role = self.settings.role
        return None if role is None else role == "admin"

    def clean(self) -> list[LockInfo]:
        """The server removes expired leases itself (and announces them): nothing to clean."""
        return []

    # -- what the connection tells -----------------------------------------------------------

    def _reassert(self) -> None:
        """After (re)connecting: extend every lease still held, so a server restart or a network
        blip costs nothing; a lease someone else got meanwhile is marked lost."""
        for task_id, held in list(self._held.items()):
            if held.lost is not None:
                continue
            try:
                result = self._lock(task_id, held.ttl)
            except LockerUnavailable:
                return  # lost again: the next connection tries again
            except OrcError as exc:
                log.warning("%s: could not re-assert the lease: %s", task_id, exc.message)
                continue
            problem = self._check(task_id, held, result)
            if problem is not None:
                held.lost = problem
                log.error("%s", problem)

    def _on_message(self, message: dict[str, Any]) -> None:
        """Lock events for a lease this holder lost (the server sends them to all of the
        holder's connections): stolen, or released by an admin's force."""
        if message.get("type") != protocol.EVENT:
            return
        data = message.get("data") or {}
        task_id, kind = data.get("task_id"), data.get("event_type")
        payload = data.get("payload") or {}
        held = self._held.get(task_id) if isinstance(task_id, str) else None
        if held is None or not isinstance(payload, dict):
            return
        if (kind == protocol.LOCK_STOLEN and payload.get("old_token") == held.token
                and payload.get("old_client") == self.client_id):
            held.lost = (f"{task_id}: the lease was stolen on the team server by "
                         f"{payload.get('new_owner')} (token {payload.get('token')})")
        elif (kind == protocol.LOCK_RELEASED and payload.get("forced_by")
              and payload.get("client") == self.client_id and payload.get("token") == held.token):
            held.lost = (f"{task_id}: the lease was released by force on the team server by "
                         f"{payload.get('forced_by')}")
        elif kind == protocol.LOCK_EXPIRED and payload.get("previous_client") == self.client_id:
            log.warning("%s: the team server expired the lease (no heartbeat in time); the next "
                        "heartbeat renews it if nobody took it", task_id)
            return
        else:
            return
        log.error("%s", held.lost)

    def _on_late(self, message: dict[str, Any]) -> None:
        """A lock granted after its request timed out (the caller fell back or gave up): give it
        back, unless this locker holds the task by now or asks for it again (that newer request,
        answered after this one, would find its grant released behind its back)."""
        data = message.get("data") or {}
        task_id = data.get("task_id") if isinstance(data, dict) else None
        if (message.get("type") == protocol.LOCK_RESULT and isinstance(task_id, str)
                and data.get("acquired") and not data.get("extended")
                and task_id not in self._held and held_by(data, self.user, self.client_id)):
            log.debug("%s: giving back a grant that came too late", task_id)
            self.client.send(protocol.UNLOCK, {"task_id": task_id}, unless_in_flight=task_id)
