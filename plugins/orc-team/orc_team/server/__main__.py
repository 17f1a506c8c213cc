"""``python -m orc_team.server``: the team server without the orc front end."""

from __future__ import annotations

import sys

from orc_team.cli import main

sys.exit(main())
