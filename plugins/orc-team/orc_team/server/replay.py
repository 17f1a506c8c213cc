"""Replay: a project's kept events after an offset, handed over to live ones without a gap.

``subscribe {project_id, since, epoch?}`` and ``GET /api/events`` share :func:`start_after`,
which decides where a replay starts and whether events were lost (``truncated``).  A WebSocket
replay (:func:`replay`) is paced by the connection's queue and runs while live events of the
project keep coming: the connection is marked as replaying (a :class:`~.connection.Held`)
*before* the store is read, so every event fanned out from then on is held rather than sent.
Events are kept before they are fanned out, so each one is either in what the replay reads or
held (or both: held ones the replay already sent are dropped by offset).  The hand-over, a read
that finds nothing more and the sending of what was held, has no ``await`` in between.
"""

from __future__ import annotations

from orc_team.server.connection import Connection, Held
from orc_team.server.events import frame
from orc_team.server.store import Store, Stream

CHUNK = 500
"""Events read from the store at a time."""
STALL = 10.0
"""Seconds a replaying connection may leave its queue unread before it is dropped."""


def start_after(stream: Stream, since: int, epoch: str | None) -> tuple[int, bool]:
    """(the offset to replay after, truncated).  An epoch other than the stream's, or a
    ``since`` beyond its last offset (counted in some other stream, such as a wiped store's),
    replays everything kept, truncated; so does a ``since`` older than the oldest kept event."""
    oldest = stream.oldest_offset - 1
    if (epoch is not None and epoch != stream.epoch) or since > stream.last_offset:
        return oldest, True
    if since < oldest:
        return oldest, True
    return since, False


async def replay(conn: Connection, store: Store, project_id: str, after: int,
                 held: Held) -> None:
    """Send ``project_id``'s kept events after ``after``, then what was held meanwhile, then
    stop holding.  The caller put ``held`` in ``conn.replays`` before reading anything."""
    try:
        while not conn.closing:
            if not held.complete:  # it gave up holding: what it dropped is in the store
                held.reset()
            rows = await store.events(project_id, after, CHUNK)
            for offset, data in rows:
                message = frame(data)
                if not conn.has_room(len(message)) and not await _drain(conn):
                    return
                conn.send_bytes(message)
                after = offset
            if rows:
                continue
            if not await _drain(conn):
                return
            if held.complete:
                for message in held.after(after):
                    conn.send_bytes(message)
                return
    finally:
        conn.replays.pop(project_id, None)


async def _drain(conn: Connection) -> bool:
    if await conn.drained(STALL):
        return not conn.closing
    conn.drop(f"not reading a replay for {STALL:g} s", None)
    return False
