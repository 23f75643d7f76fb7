"""A benchmark's report kept as it is printed: each line printed (flushed) and the whole so far
rewritten to a file first, so a run stopped at any point (``timeout``, a lost machine) leaves every
line it printed in the file. Used by ``benchmarks/gpu_real_scale.py``."""

import os
import subprocess
import time
from pathlib import Path


class Report:
    def __init__(self, path):
        self.path, self.lines = Path(path), []
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, line=""):
        self.lines.append(line)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("\n".join(self.lines) + "\n")
        os.replace(tmp, self.path)  # never a half-written file
        print(line, flush=True)

    def run(self, cmd, timeout):
        """Run ``cmd``, its output (stdout and stderr) a line of the report each as it comes; stopped
        after ``timeout`` seconds (said in the report). Returns its exit status, or None if stopped."""
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        stop = time.time() + timeout
        try:
            for line in proc.stdout:
                self(line.rstrip("\n"))
                if time.time() > stop:
                    raise subprocess.TimeoutExpired(cmd, timeout)
            return proc.wait(timeout=max(1.0, stop - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            self(f"(stopped at the time limit, after {timeout:.0f} s)")
            return None
