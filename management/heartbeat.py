"""A daemon thread that records, every few seconds, that a job's process is alive: long phases (building
a backbone, compiling, saving a large model) write no progress, and the web side tells a dead process
from a slow one by this beat. Shared by training runs and health checks."""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.db import connection


class Heartbeat:
    """Calls `beat()` every `interval` seconds until the block ends or `beat()` returns False."""

    def __init__(self, beat: Callable[[], bool | None], *, interval: float, name: str) -> None:
        self.beat, self.interval = beat, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    if self.beat() is False:
                        return
                except Exception:  # noqa: BLE001 - a missed beat is retried; the job goes on
                    continue
        finally:
            connection.close()
