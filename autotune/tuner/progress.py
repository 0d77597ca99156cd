"""Progress output of a tuning run: a bar for the current study and an overall count on one line, rewritten in
place on a terminal; one line per finished study otherwise. Messages (skips, warnings) go to the same
stream."""

from __future__ import annotations

import time
from typing import TextIO


class Progress:
    WIDTH = 20

    def __init__(self, total: int, stream: TextIO, enabled: bool = True) -> None:
        self.total, self.stream, self.enabled = total, stream, enabled
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.start = time.monotonic()
        self.index = 0
        self.trials_run = 0
        self.label = ""
        self._dirty = False  # a bar line is on screen without its newline

    def message(self, text: str) -> None:
        """One line of text, written whether or not the bar is enabled (it clears the bar first)."""
        if self._dirty:
            self.stream.write("\r\033[K")
            self._dirty = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def study(self, index: int, label: str) -> None:
        self.index, self.label = index, label

    def update(self, done: int, target: int, best_s: float | None, default_s: float | None,
               final: bool = False) -> None:
        if not self.enabled:
            return
        frac = min(done / target, 1.0) if target else 1.0
        bar = "#" * int(round(frac * self.WIDTH))
        best = f"best {best_s * 1e3:.3g} ms" if best_s else "best -"
        speedup = f" ({default_s / best_s:.2f}x default)" if best_s and default_s else ""
        elapsed = time.monotonic() - self.start
        line = (f"[{self.index}/{self.total}] {self.label} [{bar:<{self.WIDTH}}] {done}/{target} {best}"
                f"{speedup} | trials run {self.trials_run}, {elapsed:.0f} s")
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self._dirty = True
            if final:
                self.stream.write("\n")
                self._dirty = False
            self.stream.flush()
        elif final:
            self.message(line)

    def close(self) -> None:
        if self._dirty:
            self.stream.write("\n")
            self._dirty = False
