"""Progress of a long write, on stderr: a rewritten line on a terminal, a few lines elsewhere.

Small bundles are written before anyone could read a progress line, so nothing is shown
below ``threshold`` objects unless asked for (``--progress``).

Called by ``giter-bundle create`` through ``History.write_bundle(progress=...)``.
"""

from __future__ import annotations

import sys
from typing import TextIO

# A bundle this large takes long enough on a slow USB stick to be worth watching.
DEFAULT_THRESHOLD = 2000


class Progress:
    """``progress(done, total)`` callback that prints ``label: 42% (420/1000)``."""

    def __init__(self, label: str, *, stream: TextIO | None = None, force: bool = False,
                 quiet: bool = False, threshold: int = DEFAULT_THRESHOLD) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.force = force
        self.quiet = quiet
        self.threshold = threshold
        self._tty = self.stream.isatty()
        self._shown = 0  # characters of the rewritten line now on screen
        self._last = -1
        self._finished = False

    def __call__(self, done: int, total: int) -> None:
        if self.quiet or self._finished or (not self.force and total < self.threshold):
            return
        percent = 100 * done // total if total else 100
        # On a terminal every percent; in a log only every 25 %, or it floods.
        step = percent if self._tty else percent - percent % 25
        if step == self._last and done < total:
            return
        self._last = step
        self._finished = done >= total
        text = f"{self.label}: {percent:3d}% ({done}/{total})"
        if self._tty:
            # A shorter line blanks what the longer one left; never wider than the screen.
            import shutil

            text = text[:max(20, shutil.get_terminal_size((80, 24)).columns - 1)]
            self.stream.write("\r" + text.ljust(self._shown) + ("\n" if self._finished else ""))
            self._shown = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
