"""Job-wide progress of a run, reported by the launcher while the pipeline runs.

Every ``progress_seconds`` the launcher counts the run's rows in the database (by
tranche, through the table's key) and logs documents written of documents planned
(the chunks' estimate), the rate since the start and the time left at that rate. It
reads the database rather than Beam metrics, so it works the same on the local engine,
on a portable runner and on Dataflow.
"""

from __future__ import annotations

import logging
import threading
import time

from pipelines.configuration.connection import opened
from store.run_records import written_rows
from store.session import DatabaseSettings

_LOG = logging.getLogger("beamscore")


class ProgressReporter(threading.Thread):
    def __init__(self, database: DatabaseSettings, progress_seconds: float, run_id: str,
                 tranches: list[str], planned: int):
        super().__init__(name="beamscore-progress", daemon=True)
        self._database, self._period = database, progress_seconds
        self._run_id, self._tranches = run_id, tranches
        self._planned = max(1, planned)
        self._stop_event = threading.Event()
        self._t0 = time.monotonic()

    def run(self) -> None:
        period = max(0.2, self._period)
        while not self._stop_event.wait(period):
            try:
                self.report()
            except Exception as exc:  # noqa: BLE001 - progress is best effort
                _LOG.debug("progress not available: %s", exc)

    def report(self) -> None:
        with opened(self._database) as db:
            written = sum(written_rows(db, self._run_id, self._tranches).values())
        elapsed = time.monotonic() - self._t0
        rate = written / elapsed if elapsed > 0 else 0.0
        left = max(0, self._planned - written)
        eta = f"{left / rate:,.0f} s" if rate > 0 else "unknown"
        _LOG.info("progress: %s of about %s documents written (%.0f%%), %s docs/s, ETA %s",
                  f"{written:,}", f"{self._planned:,}", 100 * min(1.0, written / self._planned),
                  f"{rate:,.0f}", eta)

    def stop(self) -> None:
        self._stop_event.set()
