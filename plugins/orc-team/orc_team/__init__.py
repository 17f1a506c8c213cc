"""orc-team: the team-mode plugin of orc-git (WebSocket team server and the client locker).

Installed as its own distribution and found by orc-git through the ``orc_git`` entry point
``team = orc_team.plugin``.
"""

from __future__ import annotations

__version__ = "0.1.0"
