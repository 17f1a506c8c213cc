"""orc_git.locking.info.parse_rfc3339: the rules of ``time.strptime`` (which the hooks no longer
import), checked against it on the edges."""

from __future__ import annotations

import calendar
import time

import pytest

from orc_git.locking.info import parse_rfc3339


def _strptime(text: str) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return None


@pytest.mark.parametrize("text", [
    "2024-05-01T10:00:00Z", "2024-02-29T23:59:59Z", "2023-02-29T00:00:00Z",
    "2024-02-30T00:00:00Z", "2024-12-31T23:59:60Z", "2024-12-31T23:59:61Z",
    "2024-12-31T23:59:62Z", "0000-01-01T00:00:00Z", "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z", "2024-01-01T24:00:00Z", "2024-01-01T00:60:00Z",
    "2024-13-01T00:00:00Z", "2024-00-10T00:00:00Z", "2024-01-00T00:00:00Z",
])
def test_times_are_read_as_strptime_reads_them(text: str) -> None:
    assert parse_rfc3339(text) == _strptime(text)


def test_offsets_are_applied_and_bad_ones_refused() -> None:
    assert parse_rfc3339("2024-05-01T12:30:00+02:30") == parse_rfc3339("2024-05-01T10:00:00Z")
    assert parse_rfc3339("2024-05-01T08:00:00-02:00") == parse_rfc3339("2024-05-01T10:00:00Z")
    assert parse_rfc3339("2024-05-01T10:00:00.123456Z") == parse_rfc3339("2024-05-01T10:00:00Z")
    for bad in ("2024-05-01T10:00:00+24:00", "2024-05-01T10:00:00+01:60", "2024-05-01T10:00:00",
                "2024-05-01T10:00:00Z trailing", "yesterday"):
        assert parse_rfc3339(bad) is None, bad
