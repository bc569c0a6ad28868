"""Peak resident memory of this process and all its children (the Spark JVM, Spark's Python workers),
sampled in a background thread, for the data benchmarks."""

from __future__ import annotations

import threading

import psutil


class PeakRss:
    """with PeakRss() as mem: ...  then mem.total (bytes, whole tree), mem.jvm (largest java process),
    mem.py_workers (sum over child Python processes): each the largest value seen at any sample."""

    def __init__(self, interval: float = 0.2):
        self.total = self.jvm = self.py_workers = 0
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        total, jvm, workers = me.memory_info().rss, 0, 0
        for child in me.children(recursive=True):
            try:
                rss, name = child.memory_info().rss, child.name()
            except psutil.Error:  # exited between listing and reading
                continue
            total += rss
            if "java" in name:
                jvm = max(jvm, rss)
            elif "python" in name:
                workers += rss
        self.total, self.jvm, self.py_workers = max(self.total, total), max(self.jvm, jvm), max(self.py_workers, workers)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
