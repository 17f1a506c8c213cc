"""orc_git.text: one rule for every line orc prints from data, and for the JSON it prints."""

from __future__ import annotations

import json

import pytest

from orc_git.text import clipped, encodable, json_safe, printable

ESCAPED = [
    ("newline", "a\nb", "a\\nb"),
    ("carriage return", "a\rb", "a\\rb"),
    ("tab", "a\tb", "a\\tb"),
    ("escape", "\x1b[31mred", "\\x1b[31mred"),
    ("bell", "x\x07", "x\\x07"),
    ("nul", "\x00", "\\x00"),
    ("del", "\x7f", "\\x7f"),
    ("c1 csi", "\x9b31m", "\\x9b31m"),
    ("next line", "a\x85b", "a\\x85b"),
    ("line separator", "a\u2028b", "a\\u2028b"),
    ("paragraph separator", "a\u2029b", "a\\u2029b"),
    ("rlo", "abc\u202edef", "abc\\u202edef"),
    ("lre", "\u202a", "\\u202a"),
    ("pdf", "\u202c", "\\u202c"),
    ("lri..pdi", "\u2066\u2067\u2068\u2069", "\\u2066\\u2067\\u2068\\u2069"),
    ("lrm rlm", "\u200e\u200f", "\\u200e\\u200f"),
    ("arabic letter mark", "\u061c", "\\u061c"),
    ("zero width space", "a\u200bb", "a\\u200bb"),
    ("bom", "\ufeff", "\\ufeff"),
    ("lone surrogate", "\ud800", "\\ud800"),
    ("low surrogate", "x\udfffy", "x\\udfffy"),
    ("tag character", "\U000e0041", "\\U000e0041"),
    ("private use", "\ue000", "\\ue000"),
]


@pytest.mark.parametrize(("text", "shown"), [c[1:] for c in ESCAPED],
                         ids=[c[0] for c in ESCAPED])
def test_printable_escapes_what_could_act_on_a_terminal(text: str, shown: str) -> None:
    out = printable(text)
    assert out == shown
    assert out.isprintable()
    out.encode("utf-8")  # always encodable


@pytest.mark.parametrize("text", ["plain", "Zoë O'Brien: #1 \"q\"", "中文 العربية", "😀 x",
                                  "back\\slash \\x1b", ""])
def test_printable_keeps_printable_text(text: str) -> None:
    assert printable(text) == text


def test_a_fake_orc_line_stays_on_one_line() -> None:
    hostile = "x\n\x1b[31morc: fake line\u202e"
    shown = printable(hostile)
    assert "\n" not in shown and "\x1b" not in shown and "\u202e" not in shown
    assert shown == "x\\n\\x1b[31morc: fake line\\u202e"


def test_clipped_escapes_first_then_cuts() -> None:
    assert clipped("a" * 600, 128) == "a" * 127 + "…"
    assert len(clipped("\x1b" * 100, 128)) == 128  # 4 characters per escape, then cut
    assert clipped("Al\nice", 128) == "Al\\nice"
    assert clipped("short", 128) == "short"


def test_encodable_only_touches_surrogates() -> None:
    assert encodable("a\ud800b\x1b\u202e") == "a\\ud800b\x1b\u202e"
    assert encodable("😀") == "😀"


def test_json_safe_output_is_strict_utf8_json() -> None:
    payload = {"lock": {"owner": "\ud800@x", "list": ["\udfff", 3, None, True]},
               "\udc80key": "ok", "emoji": "😀", "ctl": "\x1b"}
    text = json.dumps(json_safe(payload))
    text.encode("utf-8")
    back = json.loads(text)
    assert back["lock"]["owner"] == "\\ud800@x"
    assert back["lock"]["list"] == ["\\udfff", 3, None, True]
    assert back["\\udc80key"] == "ok"
    assert back["emoji"] == "😀" and back["ctl"] == "\x1b"  # real values where UTF-8 can say them
    for value in (back["lock"]["owner"], *back):
        value.encode("utf-8")
