"""Transcript lines: however the output is cut into reads, the lines are those of the whole
output, decoded leniently and cut at 500 characters."""

from __future__ import annotations

import random

import pytest

from orc_git.executor.lines import KEEP_BYTES, TRANSCRIPT_CHARS, LineSplitter, transcript_text


def reference(data: bytes) -> list[str]:
    """The lines as the whole output says them (what the splitter must match)."""
    parts = data.split(b"\n")
    last = parts.pop()
    lines = []
    for raw in parts + ([last] if last else []):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        text = raw.decode("utf-8", "replace")
        lines.append(text if len(text) <= TRANSCRIPT_CHARS else text[:TRANSCRIPT_CHARS] + "...")
    return lines


def split_in_reads(data: bytes, rng: random.Random) -> list[str]:
    splitter = LineSplitter()
    out: list[str] = []
    i = 0
    while i < len(data):
        n = rng.choice([1, 2, 3, 7, 100, KEEP_BYTES - 1, KEEP_BYTES + 1, 65536])
        out += splitter.feed(data[i:i + n])
        i += n
    return out + splitter.flush()


SAMPLES = [
    b"",
    b"one\ntwo\n",
    b"no newline",
    b"\n\n\n",
    b"crlf\r\nline\r\n",
    "é€😀".encode() * 700 + b"\nshort\n",
    b"x" * (KEEP_BYTES - 1) + b"\n" + b"y" * KEEP_BYTES + b"\n" + b"z" * (KEEP_BYTES + 1),
    "€".encode() * 501 + b"\n" + "€".encode() * 500 + b"\n",
    b"\xff" * 3000 + b"\n\xc3" + b"(" * 10,
]


@pytest.mark.parametrize("data", SAMPLES)
def test_lines_do_not_depend_on_how_the_output_is_read(data: bytes) -> None:
    expected = reference(data)
    for seed in range(20):
        assert split_in_reads(data, random.Random(seed)) == expected


def test_random_bytes_in_random_reads_match_the_whole() -> None:
    rng = random.Random(7)
    for _ in range(30):
        data = bytes(rng.choice(b"ab\n\xc3\xa9\xe2\x82\xac\xff\r") for _ in range(6000))
        assert split_in_reads(data, rng) == reference(data)


def test_a_huge_line_keeps_only_what_it_needs() -> None:
    splitter = LineSplitter()
    for _ in range(1000):
        assert splitter.feed(b"q" * 10000) == []
    assert len(splitter._head) == KEEP_BYTES  # bounded, whatever the line's length
    assert splitter.feed(b"\n") == ["q" * TRANSCRIPT_CHARS + "..."]
    assert splitter.flush() == []


def test_cutting_counts_characters_not_bytes() -> None:
    assert transcript_text("😀".encode() * 500) == "😀" * 500
    assert transcript_text("😀".encode() * 501) == "😀" * 500 + "..."
