"""The flat ``key: value`` YAML orc-git writes for leases and task state, read without PyYAML.

Each line is a key and a JSON scalar, which is plain YAML any tool reads. Reading takes that exact
shape with ``json.loads`` per line (hooks read hundreds of these per checkout) and falls back to
PyYAML's safe loader only for files written by someone else; tags never execute.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from json.encoder import encode_basestring_ascii as _quote
from typing import Any


class NotFlatYaml(ValueError):
    """The bytes are not a YAML mapping this module can read; the message says why."""


def _scalar(value: Any) -> str:
    if type(value) is str:
        return _quote(value)
    if type(value) is int:
        return str(value)
    return json.dumps(value)


def dump(fields: Iterable[tuple[str, Any]], keep_none: bool = False) -> bytes:
    return "".join(f"{k}: {_scalar(v)}\n" for k, v in fields
                   if keep_none or v is not None).encode()


def _fast(text: str) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if not sep or key in out:
            return None
        try:
            out[key] = json.loads(value)
        except (ValueError, RecursionError):  # deeply nested brackets exhaust json's recursion
            return None
    return out


def _slow(raw: bytes) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(raw, Loader=loader)
    except yaml.YAMLError as exc:
        raise NotFlatYaml(f"not valid YAML: {str(exc).splitlines()[0]}") from None
    except (RecursionError, MemoryError):
        raise NotFlatYaml("YAML too deeply nested") from None
    except (ValueError, TypeError, OverflowError) as exc:  # constructors: `!!int x`, 2024-02-30
        raise NotFlatYaml(f"not valid YAML: {str(exc)[:200]}") from None


def load(raw: bytes, max_bytes: int) -> dict[str, Any]:
    if not raw.strip():
        raise NotFlatYaml("the file is empty")
    if len(raw) > max_bytes:
        raise NotFlatYaml(f"the file is larger than {max_bytes} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NotFlatYaml("the file is not UTF-8 text") from None
    data = _fast(text)
    if data is None:
        data = _slow(raw)
    if not isinstance(data, dict):
        raise NotFlatYaml(f"expected a mapping, found {type(data).__name__}")
    return data
