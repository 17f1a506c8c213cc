"""``orc resource list|get|put|edit``: the team server's shared resources from a terminal.

A save is a compare-and-set against the version the text started from.  When someone saved in
between, a person at a terminal (stdin and stdout are TTYs, no ``--json``) gets the spec's
dialog: view the diff, use theirs, use mine (saved over the new version, knowingly), or merge
(three-way, against the version both started from, with ``git merge-file``; conflicts are
resolved in the editor).  Anyone else gets exit 1 and ``CONFLICT`` with both versions, so a
script can decide; an edit's text is then kept in its file, never lost.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from orc_git.cli.output import Output, ago, use_colour
from orc_git.errors import InvalidInput, NotFound, OrcError, UsageError
from orc_git.text import printable

from orc_team.client.resources import ResourceClient, ResourceConflict
from orc_team.feed import ansi, plain
from orc_team.protocol import MAX_RESOURCE_BYTES, Resource
from orc_team.textmerge import diff_lines, has_markers, three_way


def _client(out: Output) -> ResourceClient:
    from orc_team.views import _settings  # the same lookup as `orc team activity`

    return ResourceClient(_settings(out))


def _decode(data: bytes, where: str) -> str:
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{where} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                           "a shared resource is UTF-8 text") from None
    if len(data) > MAX_RESOURCE_BYTES:
        raise InvalidInput(f"{where} is {len(data)} bytes; a shared resource may be at most "
                           f"{MAX_RESOURCE_BYTES}")
    return text


def _who(resource: Resource) -> str:
    who = resource.updated_by or "?"
    return f"version {resource.version} by {who} ({ago(resource.updated_at)})"


def cmd_list(args: argparse.Namespace, out: Output) -> int:
    client = _client(out)
    try:
        found = client.list()
    finally:
        client.close()
    for r in found:
        out.row(r.resource_id, r.version, r.updated_by or "-", r.updated_at or "-",
                r.project_id or "-")
    if not found:
        out.say("no shared resources yet: `orc resource edit ID` creates one")
    out.result({"resources": [r.to_json() for r in found]})
    return 0


def cmd_get(args: argparse.Namespace, out: Output) -> int:
    client = _client(out)
    try:
        found = client.get(args.resource_id, args.version)
    finally:
        client.close()
    out.say(f"{found.resource_id}: {_who(found)}")
    if not out.json:
        write_content(found.content or "")
    out.result({"resource": found.to_json()})
    return 0


def write_content(text: str) -> None:
    """Exactly the text into a pipe or file; on a terminal, each line shown printable (a
    resource is other people's text: its escape sequences must not act)."""
    if sys.stdout.isatty():
        for line in text.splitlines():
            print(printable(line))
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(text.encode())
    sys.stdout.flush()


def cmd_put(args: argparse.Namespace, out: Output) -> int:
    if args.file == "-":
        content = _decode(sys.stdin.buffer.read(), "standard input")
    else:
        try:
            content = _decode(Path(args.file).read_bytes(), args.file)
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    client = _client(out)
    try:
        return Saving(client, out, args, None).save(content, args.version)
    finally:
        client.close()


def cmd_edit(args: argparse.Namespace, out: Output) -> int:
    client = _client(out)
    try:
        try:
            current: Resource | None = client.get(args.resource_id)
        except NotFound:
            current = None
            out.say(f"{args.resource_id} does not exist yet: saving creates it")
        start = (current.content or "") if current else ""
        fd, name = tempfile.mkstemp(prefix=f"orc-{args.resource_id}-", suffix=".txt")
        path = Path(name)
        with os.fdopen(fd, "wb") as f:
            f.write(start.encode())
        edited = run_editor(path)
        if edited == start:
            path.unlink()
            out.say("no changes: nothing saved")
            out.result({"saved": False, "resolution": None,
                        "resource": current.to_json() if current else None})
            return 0
        code = Saving(client, out, args, path).save(edited, current.version if current else 0)
        path.unlink(missing_ok=True)
        return code
    finally:
        client.close()


def run_editor(path: Path) -> str:
    """``$VISUAL`` or ``$EDITOR`` (split as a shell would, no shell run) on ``path``; what it
    left there."""
    command = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"cannot read the editor command {command!r}: {exc}") from None
    if not argv:
        raise UsageError("VISUAL / EDITOR is empty: set it to your editor, e.g. EDITOR=nano")
    try:
        done = subprocess.run([*argv, str(path)])
    except OSError as exc:
        raise OrcError(f"cannot run the editor {argv[0]!r}: {exc.strerror or exc}; your text "
                       f"is in {path}") from None
    if done.returncode != 0:
        raise OrcError(f"the editor exited with status {done.returncode}: nothing saved; your "
                       f"text is in {path}")
    try:
        return _decode(path.read_bytes(), "the edited text")
    except InvalidInput as exc:
        raise InvalidInput(f"{exc.message}: nothing saved; your text is in {path}") from None
    except OSError as exc:
        raise OrcError(f"cannot read back {path}: {exc.strerror or exc}") from None


class Saving:
    """One save and, on a terminal, the conflict dialog until it is resolved or given up.
    ``keep`` is the file an edit's text lives in (named when the save fails)."""

    CHOICES = "[d] view diff   [t] use theirs   [m] use mine   [g] merge   [q] quit"

    def __init__(self, client: ResourceClient, out: Output, args: argparse.Namespace,
                 keep: Path | None) -> None:
        self.client = client
        self.out = out
        self.args = args
        self.rid: str = args.resource_id
        self.keep = keep
        self.interactive = (not out.json and sys.stdin.isatty() and sys.stdout.isatty())

    def save(self, mine: str, expected: int) -> int:
        base = expected  # the version ``mine`` was made from: a merge's common base
        resolution: str | None = None
        while True:
            try:
                made = self.client.put(self.rid, mine, expected, self.args.project)
                break
            except ResourceConflict as exc:
                if not self.interactive:
                    self._give_up(exc, mine, expected)
                choice = self._ask(exc.current, mine, expected)
                if choice == "t":
                    self.out.say(f"kept {self.rid} {_who(exc.current)} (theirs); your changes "
                                 "were discarded")
                    self.out.result({"saved": False, "resolution": "theirs",
                                     "resource": exc.current.to_json()})
                    return 0
                if choice == "m":
                    expected, resolution = exc.current.version, "mine"
                    continue
                if choice == "g":
                    merged = self._merge(exc.current, mine, base)
                    if merged is not None:
                        mine, resolution = merged, "merge"
                        expected = base = exc.current.version
                        continue
                self._give_up(exc, mine, expected)
        self.out.say(f"saved {self.rid} version {made.version}"
                     + (f" ({resolution})" if resolution else ""))
        self.out.result({"saved": True, "resolution": resolution, "resource": made.to_json()})
        return 0

    def _give_up(self, exc: ResourceConflict, mine: str, expected: int) -> None:
        self.args.failure_fields = {
            "current": exc.current.to_json(), "expected_version": expected,
            "mine": {"resource_id": self.rid, "base_version": expected, "content": mine}}
        if self.keep is not None:
            self.keep.write_bytes(mine.encode())
            self.args.failure_fields["kept_in"] = str(self.keep)
            self.out.say(f"your text is kept in {self.keep}")
        raise exc

    def _prompt(self, question: str, choices: str) -> str:
        """One letter of ``choices``; end of input is ``q``."""
        while True:
            print(question, end="", file=sys.stderr, flush=True)
            line = sys.stdin.readline()
            if not line:
                print(file=sys.stderr)
                return "q"
            answer = line.strip().lower()[:1]
            if answer and answer in choices:
                return answer

    def _ask(self, current: Resource, mine: str, expected: int) -> str:
        who = current.updated_by or "someone"
        since = ("you were creating it" if expected == 0 else
                 f"you started from version {expected}")
        self.out.warn(f"conflict: {self.rid} was modified by {who} {ago(current.updated_at)} "
                      f"(now version {current.version}; {since})")
        while True:
            print(f"  {self.CHOICES}", file=sys.stderr)
            choice = self._prompt("Your choice [d/t/m/g/q]: ", "dtmgq")
            if choice != "d":
                return choice
            paint = ansi if use_colour(sys.stderr) else plain
            lines = diff_lines(current.content or "", mine, f"theirs (version "
                               f"{current.version})", paint)
            for line in lines or ["(no difference in the text)"]:
                print(line, file=sys.stderr)

    def _merge(self, current: Resource, mine: str, base_version: int) -> str | None:
        """The three-way merge of mine and theirs against ``base_version``; with conflicts,
        resolved in the editor.  None: given up."""
        base = "" if base_version == 0 else (self.client.get(self.rid, base_version).content
                                             or "")
        label = f"theirs (version {current.version})"
        merged, conflicts = three_way(base, mine, current.content or "", label)
        if not conflicts:
            self.out.say(f"merged cleanly with version {current.version}")
            return merged
        self.out.say(f"{conflicts} conflict(s) merging with version {current.version}: "
                     "resolve them in the editor (remove every <<<<<<< ======= >>>>>>> line)")
        fd, name = tempfile.mkstemp(prefix=f"orc-{self.rid}-merge-", suffix=".txt")
        path = Path(name)
        with os.fdopen(fd, "wb") as f:
            f.write(merged.encode())
        while True:
            text = run_editor(path)
            if not has_markers(text):
                path.unlink()
                return text
            self.out.warn("conflict markers remain: not saved")
            if self._prompt("  [e] edit again   [q] quit: ", "eq") != "e":
                if self.keep is None:
                    self.out.say(f"the merge is kept in {path}")
                else:
                    path.unlink()
                return None


__all__ = ["cmd_edit", "cmd_get", "cmd_list", "cmd_put"]
