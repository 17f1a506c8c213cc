"""The lock.yaml format: what the writer renders reads back exactly, and every kind of bad file is
:class:`Unreadable` (never another exception, never code execution, never a hang)."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from orc_git.locking import lockyaml
from orc_git.locking.info import LockInfo, parse_rfc3339
from orc_git.locking.lockyaml import Unreadable

TASK = "TASK-AM-001"


def full_lease(**changes: Any) -> LockInfo:
    info = LockInfo(task_id=TASK, locked=True, owner="alice@box", user="alice", host="box",
                    pid=4242, pid_started=1700000000.25, acquired_at="2024-05-01T10:00:00Z",
                    heartbeat_at="2024-05-01T10:00:30Z", ttl=60, token=17,
                    host_id="box/1699999000/4026531836", display_name="Alice Martinez",
                    email="alice@example.com", stolen_from="bob@other")
    return info.with_(**changes)


def valid_text(**changes: Any) -> str:
    return lockyaml.render(full_lease(**changes)).decode()


def with_field(name: str, raw_value: str) -> bytes:
    """A valid lease with one field's value replaced by ``raw_value`` (YAML/JSON text)."""
    text = valid_text()
    new, n = re.subn(rf"^{name}: .*$", lambda _: f"{name}: {raw_value}", text, flags=re.M)
    assert n == 1
    return new.encode()


def parse(raw: bytes, task_id: str = TASK) -> LockInfo:
    return lockyaml.parse(raw, task_id)


# -- round trip ---------------------------------------------------------------------------

FIELDS = ["task_id", "owner", "user", "host", "pid", "pid_started", "acquired_at", "heartbeat_at",
          "ttl", "token", "host_id", "display_name", "email", "stolen_from"]


def test_render_parse_round_trip() -> None:
    info = full_lease()
    back = parse(lockyaml.render(info))
    for name in FIELDS:
        assert getattr(back, name) == getattr(info, name), name
    assert back.locked is True
    assert back.stale is False and back.stale_reason is None


def test_round_trip_without_optional_fields() -> None:
    info = full_lease(host_id=None, display_name=None, email=None, stolen_from=None)
    raw = lockyaml.render(info)
    assert b"stolen_from" not in raw and b"email" not in raw
    back = parse(raw)
    assert back.to_json() == info.to_json()
    assert back.host_id is None and back.stolen_from is None


def test_round_trip_of_awkward_strings() -> None:
    """Quotes, colons, unicode and control characters survive (JSON escaping)."""
    name = 'Zoë "Z" O\'Brien: #1 \\ \u00e9\u4e2d \x1b[31m'
    back = parse(lockyaml.render(full_lease(display_name=name, email="a: b@c")))
    assert back.display_name == name
    assert back.email == "a: b@c"


def test_rendered_file_is_plain_yaml_with_the_documented_fields() -> None:
    raw = lockyaml.render(full_lease())
    data = yaml.safe_load(raw)
    for name in ("task_id", "owner", "user", "host", "pid", "pid_started", "acquired_at",
                 "heartbeat_at", "ttl", "token"):
        assert name in data
    assert data["ttl"] == 60 and isinstance(data["ttl"], int)
    assert data["token"] == 17 and isinstance(data["token"], int)
    assert parse_rfc3339(data["heartbeat_at"]) is not None


def test_lease_written_by_another_tool_in_block_yaml_is_read() -> None:
    """Unquoted YAML (times become datetimes) from some other writer still parses."""
    raw = (f"# written by hand\ntask_id: {TASK}\nowner: alice@box\nuser: alice\nhost: box\n"
           "pid: 4242\npid_started: 1700000000\nacquired_at: 2024-05-01T10:00:00Z\n"
           "heartbeat_at: 2024-05-01T12:00:30+02:00\nttl: 60\ntoken: 3\nnote: ignored\n").encode()
    info = parse(raw)
    assert info.acquired_at == "2024-05-01T10:00:00Z"
    assert info.heartbeat_at == "2024-05-01T10:00:30Z"  # normalised to UTC
    assert info.pid_started == 1700000000.0
    assert info.token == 3


def test_unknown_fields_are_ignored() -> None:
    raw = valid_text() + 'future_field: {"a": 1}\n'
    assert parse(raw.encode()).token == 17


def test_future_heartbeat_is_accepted() -> None:
    """A clock ahead (or a lie) parses; the locker never judges staleness from it."""
    info = parse(with_field("heartbeat_at", '"2999-12-31T23:59:59Z"'))
    assert info.heartbeat_at == "2999-12-31T23:59:59Z"
    info = parse(with_field("acquired_at", '"9999-12-31T23:59:59Z"'))
    assert info.acquired_at == "9999-12-31T23:59:59Z"


# -- unreadable files ---------------------------------------------------------------------


def _unreadable(raw: bytes, task_id: str = TASK) -> str:
    with pytest.raises(Unreadable) as err:
        parse(raw, task_id)
    message = str(err.value)
    assert message  # a reason a person can act on
    assert len(message) < 1000
    return message


@pytest.mark.parametrize("raw", [b"", b"   ", b"\n\n\t \r\n", b"\x00" * 0])
def test_empty_or_blank(raw: bytes) -> None:
    assert "empty" in _unreadable(raw)


@pytest.mark.parametrize("cut", [0.5, 0.25, 0.9])
def test_truncated(cut: float) -> None:
    raw = lockyaml.render(full_lease())
    _unreadable(raw[: int(len(raw) * cut)])


def test_every_prefix_of_a_valid_lease_is_unreadable_or_complete() -> None:
    """A reader racing a non-atomic writer must never mistake a prefix for a different lease."""
    raw = lockyaml.render(full_lease(host_id=None, display_name=None, email=None,
                                      stolen_from=None))
    for n in range(len(raw)):
        try:
            info = parse(raw[:n])
        except Unreadable:
            continue
        # Only a cut inside the last number can parse; it must then still be this lease.
        assert info.task_id == TASK and info.owner == "alice@box"


@pytest.mark.parametrize("seed", [1, 2, 3, 42])
def test_binary_garbage(seed: int) -> None:
    raw = random.Random(seed).randbytes(4096)
    _unreadable(raw)


def test_not_utf8() -> None:
    raw = valid_text().encode().replace(b"alice@example", "alicé@example".encode("latin-1"))
    assert b"\xe9" in raw
    assert "UTF-8" in _unreadable(raw)


def test_nul_bytes() -> None:
    _unreadable(valid_text().encode().replace(b"alice", b"al\x00ice", 1))


@pytest.mark.parametrize("template", [
    '!!python/object/apply:os.system ["touch {marker}"]\n',
    'task_id: !!python/object/apply:os.system ["touch {marker}"]\n',
    'owner: !!python/object/apply:subprocess.call [["touch", "{marker}"]]\n',
    '!!python/object/new:os.system ["touch {marker}"]\n',
    'x: !!python/name:os.system\n',
])
def test_python_tags_are_never_executed(tmp_path: Path, template: str) -> None:
    marker = tmp_path / "pwned"
    raw = (valid_text() + template.format(marker=marker)).encode()
    _unreadable(raw)
    raw = template.format(marker=marker).encode()
    _unreadable(raw)
    assert not marker.exists()


def test_python_tags_are_not_executed_by_the_config_reader_either(tmp_path: Path) -> None:
    from orc_git.config import load_yaml_file
    from orc_git.errors import ConfigError

    marker = tmp_path / "pwned"
    path = tmp_path / "config.yaml"
    path.write_text(f'x: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigError):
        load_yaml_file(path)
    assert not marker.exists()


def billion_laughs(levels: int = 12, fanout: int = 10) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        refs = ", ".join([f"*l{i - 1}"] * fanout)
        lines.append(f"l{i}: &l{i} [{refs}]")
    return "\n".join(lines) + "\n"


BOMB_SCRIPT = r"""
import resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # 1 GiB: explode and it dies
from orc_git.locking import lockyaml
raw = sys.stdin.buffer.read()
t = time.monotonic()
try:
    lockyaml.parse(raw, "TASK-AM-001")
    print("parsed", time.monotonic() - t)
except lockyaml.Unreadable as exc:
    print("unreadable", time.monotonic() - t, exc)
"""


@pytest.mark.parametrize("where", ["top", "in-a-field", "beside-valid-fields"])
def test_alias_bomb_finishes_quickly_in_bounded_memory(where: str) -> None:
    """10**12 'lol's if expanded.  Run in a child with a memory cap and a timeout, so a
    regression fails this test instead of hanging or swapping the machine."""
    bomb = billion_laughs()
    if where == "top":
        text = bomb
    elif where == "in-a-field":
        text = bomb + "".join(line + "\n" for line in valid_text().splitlines()
                              if not line.startswith("owner:")) + "owner: *l11\n"
    else:
        text = bomb + valid_text()
    assert len(text) < lockyaml.MAX_BYTES
    proc = subprocess.run([sys.executable, "-c", BOMB_SCRIPT], input=text.encode(),
                          capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    verdict, seconds, *_ = proc.stdout.decode().split()
    assert float(seconds) < 5
    if where == "beside-valid-fields":
        # Unknown keys are ignored and aliases are shared, not copied: harmless, and readable.
        assert verdict == "parsed"
    else:
        assert verdict == "unreadable"


def test_deeply_nested_brackets() -> None:
    """json.loads raises RecursionError (not ValueError) on these: still just unreadable."""
    depth = 20_000
    _unreadable(("owner: " + "[" * depth + "]" * depth + "\n").encode())
    _unreadable(("[" * depth + "]" * depth).encode())
    _unreadable(("{a: " * 5000 + "1" + "}" * 5000).encode())


@pytest.mark.parametrize("size", [lockyaml.MAX_BYTES + 1, 5 * 1024 * 1024])
def test_oversized(size: int) -> None:
    text = valid_text()
    raw = (text + "#" * (size - len(text))).encode()
    assert len(raw) == size
    start = time.monotonic()
    assert "larger" in _unreadable(raw)
    assert time.monotonic() - start < 1


@pytest.mark.parametrize("raw", [b"- a\n- b\n", b"42\n", b'"just a string"\n', b"null\n",
                                 b"[1, 2]\n", b"~\n", b"true\n"])
def test_not_a_mapping(raw: bytes) -> None:
    _unreadable(raw)


def test_json_array_of_the_fields() -> None:
    _unreadable(json.dumps(list(yaml.safe_load(valid_text()).items())).encode())


WRONG_FIELDS = [
    ("pid", '"4242"'), ("pid", "true"), ("pid", "0"), ("pid", "-1"), ("pid", "4242.0"),
    ("pid", str(1 << 31)), ("pid", "null"), ("pid", "[4242]"),
    ("token", "true"), ("token", "false"), ("token", "-1"), ("token", "1.5"), ("token", '"17"'),
    ("token", str(1 << 62)), ("token", "1" * 5000),
    ("ttl", "1.5"), ("ttl", "60.0"), ("ttl", "-5"), ("ttl", "0"), ("ttl", str(10**12)),
    ("ttl", '"60"'), ("ttl", "true"), ("ttl", "1" + "0" * 400),
    ("pid_started", '"yesterday"'), ("pid_started", "-1"), ("pid_started", "NaN"),
    ("pid_started", "Infinity"), ("pid_started", "-Infinity"), ("pid_started", "1" + "0" * 400),
    ("pid_started", "true"),
    ("owner", '""'), ("owner", "5"), ("owner", '["a"]'), ("owner", '{"a": 1}'),
    ("owner", json.dumps("x" * 600)), ("user", "null"), ("host", "false"),
    ("host_id", "7"), ("stolen_from", "[]"), ("display_name", "3.5"),
    ("task_id", "1"),
]


@pytest.mark.parametrize(("name", "value"), WRONG_FIELDS,
                         ids=[f"{n}={v[:20]}" for n, v in WRONG_FIELDS])
def test_field_of_the_wrong_type_or_range(name: str, value: str) -> None:
    message = _unreadable(with_field(name, value))
    if len(value) < 1000:  # past Python's int-digits limit the YAML reader itself objects
        assert name in message


@pytest.mark.parametrize("name", ["task_id", "owner", "user", "host", "pid", "pid_started",
                                  "acquired_at", "heartbeat_at", "ttl", "token"])
def test_missing_required_field(name: str) -> None:
    text = "".join(line + "\n" for line in valid_text().splitlines()
                   if not line.startswith(f"{name}:"))
    assert name in _unreadable(text.encode())


BAD_TIMES = [
    '"yesterday"', '""', '"2024-13-01T00:00:00Z"', '"2024-02-30T00:00:00Z"',
    '"2024-05-01T25:00:00Z"', '"2024-05-01"', '"2024-05-01T10:00:00Zjunk"',
    '"2024-05-01T10:00:00 and then some"', '"2024-05-01T10:00:00"', '"2024-5-1T10:00:00Z"',
    '"1714557600"', "1714557600", "1714557600.5", '"2024-05-01T10:00:00+99:00"',
    '"\u0662\u0660\u0662\u0664-05-01T10:00:00Z"', '"2024-05-01T10:00:00Z\\n"', "true", "[]",
    "2024-02-30", "2024-05-01",  # unquoted: YAML's own date constructor objects to the first
]


@pytest.mark.parametrize("value", BAD_TIMES)
@pytest.mark.parametrize("name", ["acquired_at", "heartbeat_at"])
def test_time_that_is_not_rfc3339(name: str, value: str) -> None:
    _unreadable(with_field(name, value))


@pytest.mark.parametrize("value", ['"2024-05-01T10:00:00Z"', '"2024-05-01T10:00:00.123456Z"',
                                   '"2024-05-01T12:00:00+02:00"', '"2024-05-01t10:00:00z"',
                                   '"2024-05-01 10:00:00Z"', '"2024-05-01T05:30:00-04:30"'])
def test_rfc3339_variants_are_accepted_and_offsets_applied(value: str) -> None:
    info = parse(with_field("heartbeat_at", value))
    assert parse_rfc3339(info.heartbeat_at or "") == parse_rfc3339("2024-05-01T10:00:00Z")
    assert info.expires_at == "2024-05-01T10:01:00Z"


def test_lease_of_another_task() -> None:
    message = _unreadable(lockyaml.render(full_lease()), task_id="OTHER")
    assert "OTHER" in message and TASK in message


def test_task_id_differing_only_in_case() -> None:
    _unreadable(lockyaml.render(full_lease(task_id="task-am-001")))


def test_duplicate_keys_do_not_crash() -> None:
    """The fast path refuses duplicates and YAML keeps the last: either way, no exception
    other than Unreadable, and a readable result names this task."""
    raw = (valid_text() + 'token: "x"\n').encode()
    _unreadable(raw)


# -- what orc writes reads back as the same holder (issue 8, point 5) ------------------------

NASTY = '- &a *b !tag %x @y `z\n: "quoted" \'single\' # c\r\x1b[2J\u202e\x00\ud800 ? |>\t\\'
NAME_CASES = {
    "plain": ("alice", "Alice Martinez", "alice@example.com", "box"),
    "600 characters": ("u" * 600, "D" * 600, "e" * 600, "h" * 600),
    "hostile": (NASTY, NASTY, NASTY, NASTY),
    "hostile and long": (NASTY * 40, NASTY * 40, NASTY * 40, NASTY * 40),
    "yaml specials first": ("&x", "*alias", "!!python/object:os.system", "? key"),
    "json-looking": ('{"a": 1}', "[1, 2]", "null", "true"),
    "numbers": ("123", "0x1f", "1e400", "-0"),
    "unicode": ("zoë", "Zoë 中文 😀 العربية", "zoë@例え.jp", "hôte"),
    "line breaks of every kind": ("a\x85b", "a\u2028b\u2029c", "a\x0bb\x0cc", "a\x1cb\x1dc\x1e"),
    "a lone backslash-u": ("\\u", "\\ud800", "\\", '"'),
}


@pytest.mark.parametrize("case", list(NAME_CASES.values()), ids=list(NAME_CASES))
def test_a_holders_own_lease_reads_back_as_its_own(tmp_path: Path, case: tuple[str, ...]) -> None:
    """The formatter and the fast parser agree for any identity: the lease a holder writes is
    parsed (without the YAML fallback) into exactly that holder, within every reader limit."""
    from orc_git import flatyaml
    from orc_git.identity import MAX_NAME, Holder, Identity
    from orc_git.locking.filelocker import FileLocker

    user, display, email, host = case
    ident = Identity(user, display, email, host=host)
    for field in (ident.user, ident.host, ident.display_name, ident.email, ident.initials):
        assert field is None or (len(field) <= MAX_NAME and field.isprintable()), field
    root = tmp_path / "tasks"
    root.mkdir()
    locker = FileLocker(root, Holder.for_process(ident))
    granted = locker.acquire(TASK)
    try:
        raw = (root / TASK / "lock.yaml").read_bytes()
        assert raw.isascii() and len(raw.splitlines()) == len(raw.split(b"\n")) - 1
        assert flatyaml._fast(raw.decode()) is not None  # the fast path, not PyYAML's
        back = lockyaml.parse(raw, TASK)
        assert (back.owner, back.user, back.host, back.display_name, back.email) == (
            ident.owner, ident.user, ident.host, ident.display_name, ident.email)
        assert back.pid == os.getpid() and back.token == granted.token
        seen = locker.is_locked(TASK)
        assert seen.locked and not seen.stale and seen.mine, seen
        locker.heartbeat(TASK)
        assert not locker.is_locked(TASK).stale
    finally:
        assert locker.release(TASK)


@pytest.mark.parametrize("value", ["2024-05-01T10:00:00Z", "2024-05-01 12:00:00+02:00"])
def test_unquoted_times_as_yaml_reads_them_are_accepted(value: str) -> None:
    info = parse(with_field("heartbeat_at", value))
    assert parse_rfc3339(info.heartbeat_at or "") == parse_rfc3339("2024-05-01T10:00:00Z")
