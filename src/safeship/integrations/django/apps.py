"""The Django app config, so ``manage.py`` finds safeship's commands.

Under ``manage.py runserver`` it also makes SIGTERM stop the server as Ctrl-C does (Django
handles SIGTERM only in its autoreloader's parent, so ``--noreload`` would otherwise die by
the signal, mid-request, with a non-zero status). Nothing is changed under any other
command or server, nor when a handler is already installed.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

from django.apps import AppConfig


def _stop_like_ctrl_c(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class SafeshipConfig(AppConfig):
    name = "safeship.integrations.django"
    label = "safeship"
    verbose_name = "safeship"

    def ready(self) -> None:
        if (
            sys.argv[1:2] == ["runserver"]
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        ):
            signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
