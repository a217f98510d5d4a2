"""The test tasks, in a node whose files may not grow past ``$FSIZE_LIMIT`` bytes
(RLIMIT_FSIZE): its journal's commits fail once the WAL would pass it, as on a full
disk, without root. Python ignores SIGXFSZ, so the write fails with EFBIG instead."""
from __future__ import annotations

import os
import resource

import tasks_app
from tasks_app import *  # noqa: F403

app = tasks_app.app

_limit = int(os.environ.get("FSIZE_LIMIT", "0"))
if _limit:
    resource.setrlimit(resource.RLIMIT_FSIZE, (_limit, _limit))
