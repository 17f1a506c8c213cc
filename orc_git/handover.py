"""Handing a task over through git: the head a holder leaves, and whether a checkout has it.

A release records the holder's ``HEAD`` commit and its branch (the upstream, like
``origin/main``, when one is set); the next acquirer is *behind* when that commit is not
contained in its own ``HEAD`` (one ``git merge-base --is-ancestor``), or is not in its
repository at all.  This runs on every lease cycle and in the git hooks: ``HEAD`` is read from
git's files (a few ``stat`` calls once cached), git is run only when the two commits differ,
and nothing here imports GitPython, ``logging`` or ``dataclasses``.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from orc_git.locking.info import readable_time

if TYPE_CHECKING:
    from orc_git.repo import RepoPaths

_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_BRANCH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/@+-]{0,254}")
"""What a recorded branch may be before it is shown or given to ``git fetch``: no leading
``-`` (an option), no spaces, no control characters."""
_MAX_TEXT = 256


class Head(NamedTuple):
    """A holder's ``HEAD``: its commit and branch (None when detached).  A recorded head also
    says who left it (``by``: ``user@host``, or the team user) and when (``at``, RFC 3339)."""

    commit: str
    branch: str | None = None
    by: str | None = None
    at: str | None = None

    @property
    def short(self) -> str:
        return self.commit[:12]

    def to_json(self) -> dict[str, Any]:
        return {"commit": self.commit, "branch": self.branch, "by": self.by, "at": self.at}


def head_from(value: object) -> Head | None:
    """A head from JSON written by someone else (a tombstone, the team server): None unless
    its commit is a full hex object id and its other fields are short strings or absent; the
    commit and branch go to git as arguments, so nothing else may pass."""
    if not isinstance(value, dict):
        return None
    commit, branch = value.get("commit"), value.get("branch")
    if not isinstance(commit, str) or not _COMMIT.fullmatch(commit):
        return None
    if branch is not None and (not isinstance(branch, str) or not _BRANCH.fullmatch(branch)
                               or ".." in branch):
        branch = None
    by, at = value.get("by"), value.get("at")
    return Head(commit, branch,
                by if isinstance(by, str) and 0 < len(by) <= _MAX_TEXT else None,
                at if isinstance(at, str) and 0 < len(at) <= 64 else None)


@functools.lru_cache(maxsize=64)
def head_line(head: Head, key: bytes = b"head") -> bytes:
    """The lease-file line of a head (flow-mapping YAML that is also one JSON object).
    Cached, as :func:`parse_head_line`: a lease cycle writes and reads the same few."""
    return b"%s: %s\n" % (key, json.dumps(head.to_json()).encode())


def parse_head_line(raw: bytes, key: bytes = b"head") -> Head | None:
    """The ``head:`` line of a lease file's bytes, if it has a readable one."""
    marker = b"\n" + key + b": "
    start = raw.find(marker)
    if start < 0:
        return None
    end = raw.find(b"\n", start + len(marker))
    return _parse_value(raw[start + len(marker):end if end >= 0 else None])


@functools.lru_cache(maxsize=64)
def _parse_value(text: bytes) -> Head | None:
    try:
        return head_from(json.loads(text))
    except (ValueError, RecursionError):
        return None


@functools.lru_cache(maxsize=16)
def _signed(commit: str, branch: str | None, by: str | None, second: int) -> Head:
    """One Head per second for a holder: its line is then formatted once (:func:`head_line`)."""
    return Head(commit, branch, by, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)))


# -- reading HEAD from git's files -------------------------------------------------------------

def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(4096)
    except OSError:
        return None


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _packed_ref(common: str, ref: str) -> str | None:
    text = _read_all(f"{common}/packed-refs")
    for line in text.splitlines():
        sha, _, name = line.partition(" ")
        if name == ref and _COMMIT.fullmatch(sha):
            return sha
    return None


def _read_all(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


_SECTION = re.compile(r'\s*\[\s*branch\s+"((?:[^"\\]|\\.)*)"\s*\]\s*(?:[#;].*)?')
_ANY_SECTION = re.compile(r"\s*\[")
_KEY = re.compile(r"\s*(remote|merge)\s*=\s*(\S+)\s*(?:[#;].*)?", re.IGNORECASE)


def _upstream(common: str, branch: str) -> str | None:
    """``remote/branch`` for ``branch``'s ``branch.<name>.remote`` and ``.merge``, read from
    the clone's config (the plain form git writes; includes are not followed), or None."""
    section = None
    remote = merge = None
    for line in _read_all(f"{common}/config").splitlines():
        m = _SECTION.fullmatch(line)
        if m is not None:
            section = m[1].replace('\\"', '"').replace("\\\\", "\\")
            continue
        if _ANY_SECTION.match(line):
            section = None
            continue
        if section == branch:
            k = _KEY.fullmatch(line)
            if k is not None:
                if k[1].lower() == "remote":
                    remote = k[2]
                else:
                    merge = k[2]
    if remote is None or merge is None or not merge.startswith("refs/heads/"):
        return None
    name = merge[len("refs/heads/"):]
    return name if remote == "." else f"{remote}/{name}"


def _head_by_git(worktree: str) -> Head | None:
    """What git says, for layouts the files do not answer (a reftable store)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=worktree,
                                capture_output=True, text=True, timeout=30).stdout.strip()
        if not _COMMIT.fullmatch(commit):
            return None
        names = subprocess.run(["git", "rev-parse", "--abbrev-ref", "HEAD", "@{upstream}"],
                               cwd=worktree, capture_output=True, text=True,
                               timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    branch = names[1] if len(names) > 1 else (names[0] if names else None)
    return Head(commit, None if branch in (None, "HEAD") else branch)


def _resolve(git_dir: str, common: str, worktree: str) -> Head | None:
    text = _read(f"{git_dir}/HEAD")
    if text is None:
        return None
    text = text.strip()
    if _COMMIT.fullmatch(text):
        return Head(text, None)  # detached
    if not text.startswith("ref: refs/heads/"):
        return _head_by_git(worktree)
    ref = text[len("ref: "):]
    branch = ref[len("refs/heads/"):]
    if branch == ".invalid":  # a reftable repository: only git reads its refs
        return _head_by_git(worktree)
    sha = (_read(f"{common}/{ref}") or "").strip()
    if not _COMMIT.fullmatch(sha):
        sha = _packed_ref(common, ref) or ""
    if not sha:
        return None  # an unborn branch: nothing committed yet
    return Head(sha, _upstream(common, branch) or branch)


class Handover:
    """One worktree's side of the handover: its ``HEAD``, and whether a head is in it."""

    def __init__(self, repo: RepoPaths) -> None:
        self.worktree = os.fspath(repo.worktree)
        self._git_dir = os.fspath(repo.git_dir)
        self._common = os.fspath(repo.common_dir)
        self._cached: tuple[tuple[object, ...], Head | None] = ((), None)
        self._contained: set[tuple[str, str]] = set()  # (commit, head): ancestry never changes
        self._left: Head | None = None  # the head this worktree's last release recorded

    def head(self) -> Head | None:
        """This worktree's ``HEAD`` (None before its first commit, or outside git).  Cached
        against the ``stat`` of ``HEAD`` and of its branch's ref (``packed-refs`` when the
        branch has no loose ref): a commit or a checkout is seen at once; a change of upstream
        alone, at the next commit or checkout."""
        git_dir, common = self._git_dir, self._common
        stamps_then, head = self._cached
        first = _stamp(f"{git_dir}/HEAD")
        ref = stamps_then[1] if stamps_then and stamps_then[0] == first else self._ref()
        second = _stamp(f"{common}/{ref}") if ref else None
        if ref and second is None:
            second = _stamp(f"{common}/packed-refs")
        stamps = (first, ref, second)
        if stamps == stamps_then:
            return head
        # Every stamp was taken before the files are read: a change meanwhile is seen next time.
        head = _resolve(git_dir, common, self.worktree)
        self._cached = (stamps, head)
        return head

    def _ref(self) -> str | None:
        text = _read(f"{self._git_dir}/HEAD") or ""
        return text[5:].strip() if text.startswith("ref: refs/heads/") else None

    def behind(self, last: Head | None, head: Head | None = None) -> Head | None:
        """``last`` when this worktree's ``HEAD`` lacks it (a commit unknown here included),
        else None.  One ``git merge-base --is-ancestor`` when the commits differ; None when
        git cannot be run at all (nothing can be told, nothing is refused)."""
        if last is None or (head is None and last == self._left):
            # What this worktree itself left (the next cycle of a holder in a loop): HEAD is not
            # read again; only a HEAD moved back since that release would have been missed.
            return None
        head = head or self.head()
        if head is not None and (last.commit == head.commit
                                 or (last.commit, head.commit) in self._contained):
            return None
        if head is None:
            return last
        try:
            code = subprocess.run(["git", "merge-base", "--is-ancestor", last.commit,
                                   head.commit], cwd=self.worktree, capture_output=True,
                                  timeout=60).returncode
        except (OSError, subprocess.SubprocessError):
            return None
        if code == 0:
            self._contained.add((last.commit, head.commit))
            return None
        return last

    def lacking(self, commits: Iterable[str]) -> set[str]:
        """Which of ``commits`` this worktree's ``HEAD`` lacks (unknown ones included), in
        at most two git calls however many there are: ``cat-file --batch-check`` finds the
        unknown, one ``rev-list … --not HEAD`` the rest.  Empty when git cannot tell."""
        head = self.head()
        todo = sorted({c for c in commits if _COMMIT.fullmatch(c)}
                      - ({head.commit} if head is not None else set()))
        if head is None or len(todo) <= 1:
            return {c for c in todo if self.behind(Head(c), head) is not None}
        try:
            known = subprocess.run(["git", "cat-file", "--batch-check=%(objectname) %(objecttype)"],
                                   cwd=self.worktree, capture_output=True, text=True,
                                   input="".join(f"{c}\n" for c in todo), timeout=60)
            missing = {line.split()[0] for line in known.stdout.splitlines()
                       if not line.endswith(" commit")}
            present = [c for c in todo if c not in missing]
            listed = subprocess.run(["git", "rev-list", "--stdin", "--not", head.commit],
                                    cwd=self.worktree, capture_output=True, text=True,
                                    input="".join(f"{c}\n" for c in present), timeout=60)
        except (OSError, subprocess.SubprocessError):
            return set()
        if known.returncode != 0 or listed.returncode != 0:
            return set()
        return missing | (set(present) & set(listed.stdout.split()))

    def to_leave(self, last: Head | None, by: str | None = None) -> Head | None:
        """The head a release records: this worktree's ``HEAD``, left ``by`` the releaser
        now, unless it still lacks ``last``, the head the lease was acquired behind: then
        ``last`` itself, so the next holder is still told of it."""
        mine = self.head()
        if mine is None:
            return last
        if last is not None and self.behind(last, mine) is not None:
            return last
        left = self._left = _signed(mine.commit, mine.branch, by, int(time.time()))
        return left


def behind_message(task_id: str, head: Head) -> str:
    """The warning an acquirer behind ``head`` reads: who left what, when, and what to pull."""
    when = f" at {readable_time(head.at)}" if head.at else ""
    where = f" on {head.branch}" if head.branch else " (a detached HEAD)"
    pull = (f"fetch and merge {head.branch}" if head.branch
            else f"fetch and merge commit {head.short}")
    return (f"{task_id}: its last holder, {head.by or 'unknown'}, released it{when} with commit "
            f"{head.short}{where}, which this checkout's HEAD does not contain: {pull} "
            "before working on it")
