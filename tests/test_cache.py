"""orc_git.cache: an entry is used only while its key matches, and a bad cache is just not used."""

from __future__ import annotations

import os
from pathlib import Path

from orc_git import cache


def test_a_value_is_returned_only_for_the_key_it_was_stored_with(isolated_env: Path) -> None:
    cache.put("t/x", [1, 2], {"a": 1})
    assert cache.get("t/x", [1, 2]) == {"a": 1}
    assert cache.get("t/x", [1, 3]) is None
    assert cache.get("other", [1, 2]) is None
    stored = list((isolated_env / "cache").iterdir())
    assert [p.name for p in stored] == ["t%x.json"]  # a path separator never makes a directory


def test_a_value_that_is_not_json_is_not_cached(isolated_env: Path) -> None:
    cache.put("t", 1, object())
    assert cache.get("t", 1) is None
    assert not (isolated_env / "cache").exists()


def test_garbage_a_fifo_or_a_huge_file_is_not_used(isolated_env: Path) -> None:
    path = isolated_env / "cache" / "t.json"
    path.parent.mkdir()
    path.write_text("{not json")
    assert cache.get("t", 1) is None
    path.write_text('["a list, not an entry"]')
    assert cache.get("t", 1) is None
    path.write_bytes(b" " * (cache.MAX_BYTES + 1))
    assert cache.get("t", 1) is None
    path.unlink()
    os.mkfifo(path)
    assert cache.get("t", 1) is None  # and did not block
    path.unlink()
    cache.put("t", 1, "back")
    assert cache.get("t", 1) == "back"


def test_put_replaces_the_entry_and_leaves_no_temporary_file(isolated_env: Path) -> None:
    cache.put("t", 1, "one")
    cache.put("t", 2, "two")
    assert cache.get("t", 2) == "two" and cache.get("t", 1) is None
    assert sorted(p.name for p in (isolated_env / "cache").iterdir()) == ["t.json"]


def test_an_unwritable_cache_is_silently_not_used(isolated_env: Path) -> None:
    (isolated_env / "cache").write_text("a file where the directory should be")
    cache.put("t", 1, "v")  # no exception
    assert cache.get("t", 1) is None


def test_file_key_changes_when_the_file_does(tmp_path: Path) -> None:
    path = tmp_path / "f"
    assert cache.file_key(str(path)) is None
    path.write_text("one")
    first = cache.file_key(str(path))
    assert first is not None and first[2] == 3
    path.write_text("three")
    assert cache.file_key(str(path)) != first
