"""A one-line progress bar for rank 0: step, loss, samples per second.

Drawn only when standard output is a terminal (and not under --json): in a log
file or a batch job's output the per-step lines say the same without the
carriage returns. Only rank 0 ever writes, so lines of ranks never interleave.

Under mpiexec a rank's output is a pipe to the launcher even when the launcher
writes to a terminal, and a rank cannot tell; MPIPIPE_PROGRESS=1 draws the bar
anyway (mpiexec passes the variable on), MPIPIPE_PROGRESS=0 never.
"""

import os
import sys
import time


class Progress:
    def __init__(self, total, samples_per_step, enabled=True, stream=None):
        self.stream = stream or sys.stdout
        wanted = os.environ.get("MPIPIPE_PROGRESS")
        self.enabled = enabled and (self.stream.isatty() if wanted not in ("0", "1")
                                    else wanted == "1")
        self.total, self.samples_per_step = total, samples_per_step
        self.start = time.perf_counter()
        self.shown = False

    def update(self, step, loss):
        if not self.enabled:
            return
        done = step / self.total
        rate = step * self.samples_per_step / max(time.perf_counter() - self.start, 1e-9)
        bar = "#" * int(30 * done) + "-" * (30 - int(30 * done))
        self.stream.write(f"\r[{bar}] {step}/{self.total}  loss {loss:.4f}  {rate:,.0f} samples/s")
        self.stream.flush()
        self.shown = True

    def print(self, line):
        """A line of its own, above the bar."""
        if self.shown:
            self.stream.write("\r\033[K")
            self.shown = False
        self.stream.write(line + "\n")
        self.stream.flush()

    def close(self):
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = False
