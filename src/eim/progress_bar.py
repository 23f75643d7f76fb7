"""Progress that reads well wherever it goes (docs/design.md §9, "Watching a run").

On a terminal (or in a notebook) :func:`progress_bar` is a tqdm bar, redrawn in place. Anywhere else
(a log file, CI, a cluster job's output) a bar's carriage-return redraws would each land in the log,
so it is a :class:`LineProgress` instead: the same interface (``update``, ``set_postfix``,
``close``, iteration, ``with``) printing one plain line every ``EIM_PROGRESS_SECONDS`` seconds
(default 30; 0: a line per update) and one at the end, with what the bar shows::

    stage 2 base_ie: 124/300 (41%), 00:02 elapsed, 61.26 it/s, 00:02 left, ETA_run=0:02, base=5.595, ie=6.146

Every progress display of eim goes through :func:`progress_bar`.
"""

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Callable, Optional, TextIO

from tqdm import autonotebook, std as tqdm_std
from tqdm.auto import tqdm

from eim.errors import ConfigError

SECONDS_ENV = "EIM_PROGRESS_SECONDS"
DEFAULT_SECONDS = 30.0


def line_seconds() -> float:
    """Seconds between two progress lines: ``EIM_PROGRESS_SECONDS``, else 30."""
    raw = os.environ.get(SECONDS_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise ConfigError(f"{SECONDS_ENV}={raw!r}: the seconds between two progress lines must be a number "
                          f">= 0 (unset it for {DEFAULT_SECONDS:g})")
    return seconds


def redraws(stream: Optional[TextIO] = None) -> bool:
    """Whether progress may redraw in place on ``stream`` (default stderr): a terminal, or a notebook
    (where tqdm.auto picked its widget)."""
    if autonotebook.tqdm is not tqdm_std.tqdm:  # tqdm.auto's notebook widget
        return True
    isatty = getattr(sys.stderr if stream is None else stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def progress_bar(iterable: Optional[Iterable] = None, *, total: Optional[float] = None, desc: str = "",
                 unit: str = "it", initial: int = 0, disable: bool = False, stream: Optional[TextIO] = None,
                 every: Optional[float] = None) -> Any:
    """A tqdm bar where output :func:`redraws`, a :class:`LineProgress` elsewhere (``every``: its
    seconds between lines, default :func:`line_seconds`). ``disable``: shows nothing (a quiet run, a
    process other than the one that reports)."""
    if redraws(stream):
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=disable,
                    file=stream, dynamic_ncols=True)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=disable,
                        stream=stream, every=line_seconds() if every is None else every)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


class LineProgress:
    """A progress display that prints whole lines: one when ``every`` seconds have passed since the
    last (checked at each update) and one when it closes; nothing when ``disable``."""

    def __init__(self, iterable: Optional[Iterable] = None, total: Optional[float] = None, desc: str = "",
                 unit: str = "it", initial: int = 0, disable: bool = False, stream: Optional[TextIO] = None,
                 every: float = DEFAULT_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self.initial = initial
        self.disable, self.stream, self.every, self.clock = disable, stream, every, clock
        self.t0 = self.last = clock()
        self.postfix: dict[str, Any] = {}
        self.lines = 0  # printed so far
        self.closed = False

    def update(self, n: float = 1) -> None:
        self.n += n
        if not self.disable and self.clock() - self.last >= self.every:
            self.print_line()

    def set_postfix(self, ordered_dict: Optional[dict] = None, refresh: bool = True, **kwargs: Any) -> None:
        """The ``key=value`` fields after the counts (tqdm's order: ``ordered_dict``, then ``kwargs``
        sorted); shown on the next line (``refresh`` is tqdm's and changes nothing here)."""
        self.postfix = {**(ordered_dict or {}), **{k: kwargs[k] for k in sorted(kwargs)}}

    def line(self) -> str:
        elapsed = max(self.clock() - self.t0, 0.0)
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else None
        count = _number(self.n)
        if self.total is not None:
            count += f"/{_number(self.total)}" + (f" ({100 * self.n / self.total:.0f}%)" if self.total else "")
        fields = [f"{tqdm_std.tqdm.format_interval(elapsed)} elapsed"]
        if rate:
            fields.append(f"{rate:.2f} {self.unit}/s" if rate >= 1 else f"{1 / rate:.2f} s/{self.unit}")
            if self.total is not None and self.n < self.total:
                fields.append(f"{tqdm_std.tqdm.format_interval((self.total - self.n) / rate)} left")
        fields += [f"{k}={v}" for k, v in self.postfix.items()]
        return f"{self.desc + ': ' if self.desc else ''}{count}, " + ", ".join(fields)

    def print_line(self) -> None:
        stream = sys.stderr if self.stream is None else self.stream
        print(self.line(), file=stream, flush=True)
        self.last, self.lines = self.clock(), self.lines + 1

    def close(self) -> None:
        """The last line (once)."""
        if not self.closed:
            self.closed = True
            if not self.disable:
                self.print_line()

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
