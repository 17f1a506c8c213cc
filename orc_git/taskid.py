"""Task ids become path components, so they are checked before any file is touched."""

from __future__ import annotations

import re

from orc_git.errors import InvalidInput

_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_task_id(task_id: object) -> str:
    if isinstance(task_id, str) and _TASK_ID.fullmatch(task_id) and ".." not in task_id:
        return task_id
    shown = repr(task_id)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    raise InvalidInput(
        f"invalid task id {shown}: use 1-100 characters of letters, digits, '.', '_' and '-', "
        "starting with a letter or digit, without '..'"
    )
