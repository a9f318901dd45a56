"""How far a restore has got: a progress bar (bytes, rate, ETA) on a terminal, JSON
`rollback progress` events every few seconds otherwise (systemd-run, cron, ansible)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, TextIO

PROGRESS_EVENT_SECONDS = 5.0


@dataclass(frozen=True)
class ProgressSnapshot:
    bytes_done: int
    bytes_total: int
    segments_done: int
    segments_total: int
    seconds: float

    @property
    def rate(self) -> float:
        """Bytes per second so far."""
        return self.bytes_done / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        if self.rate <= 0:
            return None
        return max(0.0, (self.bytes_total - self.bytes_done) / self.rate)


class Progress:
    """Counters shared by the restore threads; `show` is told of every change."""

    def __init__(self, bytes_total: int, segments_total: int, monotonic: Callable[[], float],
                 show: Callable[[int], None] = lambda n: None):
        self.bytes_total = bytes_total
        self.segments_total = segments_total
        self._monotonic = monotonic
        self._started = monotonic()
        self._show = show
        self._lock = threading.Lock()
        self._bytes = 0
        self._segments = 0

    def add(self, n: int) -> None:
        """Bytes written (negative when a download starts over)."""
        with self._lock:   # also serialises the bar, which is not thread-safe
            self._bytes += n
            self._show(n)

    def segment_done(self) -> None:
        with self._lock:
            self._segments += 1

    def snapshot(self) -> ProgressSnapshot:
        with self._lock:
            return ProgressSnapshot(self._bytes, self.bytes_total, self._segments, self.segments_total,
                                    self._monotonic() - self._started)


class ProgressBar:
    """tqdm on the terminal (stderr), so stdout keeps only the summary."""

    def __init__(self, total: int, stream: TextIO):
        from tqdm import tqdm

        self._bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=stream,
                         desc="restoring", dynamic_ncols=True, smoothing=0.1)

    def update(self, n: int) -> None:
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()


class ProgressEvents:
    """A thread that logs a `rollback progress` event every `interval` seconds until closed."""

    def __init__(self, progress: Progress, log: Any, interval: float = PROGRESS_EVENT_SECONDS):
        self._progress = progress
        self._log = log
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            s = self._progress.snapshot()
            eta = s.eta_seconds
            self._log.info("rollback progress", bytes_done=s.bytes_done, bytes_total=s.bytes_total,
                           segments_done=s.segments_done, segments_total=s.segments_total,
                           rate_bytes_per_second=round(s.rate), eta_seconds=None if eta is None else round(eta, 1))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
