"""orc_git.flatyaml: the flat YAML orc writes, read back fast, and anything else refused clearly."""

from __future__ import annotations

import pytest
import yaml

from orc_git import flatyaml
from orc_git.flatyaml import NotFlatYaml


def test_dump_is_yaml_any_tool_reads_and_load_reads_it_back() -> None:
    fields = [("task_id", "T-1"), ("token", 7), ("ttl", None), ("ok", True),
              ("name", "Zoë \"quoted\"\n"), ("ratio", 0.5)]
    raw = flatyaml.dump(fields)
    assert b"ttl" not in raw  # None is left out unless asked for
    assert raw.startswith(b'task_id: "T-1"\ntoken: 7\n')
    expected = {k: v for k, v in fields if v is not None}
    assert flatyaml.load(raw, 1000) == expected
    assert yaml.safe_load(raw) == expected
    assert flatyaml.load(flatyaml.dump(fields, keep_none=True), 1000)["ttl"] is None


def test_other_yaml_is_read_by_the_slow_path() -> None:
    assert flatyaml.load(b"a: plain\nb: [1, 2]\n", 1000) == {"a": "plain", "b": [1, 2]}
    # a repeated key is not the flat shape: YAML's rule (the last one) decides
    assert flatyaml.load(b'a: 1\na: 2\n', 1000) == {"a": 2}


@pytest.mark.parametrize(("raw", "why"), [
    (b"", "the file is empty"),
    (b"  \n", "the file is empty"),
    (b"a: 1\n" * 10, "larger than 20 bytes"),
    (b"a: \xff\n", "not UTF-8"),
    (b"- a list\n", "expected a mapping, found list"),
    (b"a: [unclosed\n", "not valid YAML"),
    (b"a: !!python/object:os.system x\n", "not valid YAML"),
    (b"a: " + b"[" * 5000 + b"\n", "not valid YAML"),
])
def test_what_is_not_a_mapping_is_refused_with_a_reason(raw: bytes, why: str) -> None:
    with pytest.raises(NotFlatYaml) as err:
        flatyaml.load(raw, 20 if why.startswith("larger") else 100_000)
    assert why in str(err.value)
