"""Python stacks from py-spy, read from outside the target and always `--nonblocking`.

Two shapes, chosen from measurements on this kind of machine:

* The timeline comes from back-to-back `py-spy record -d 1 -f chrometrace` windows (~99
  timestamped samples/s at ~6 % of a core). A `dump` loop would cost 12 ms of CPU per call
  (43 ms with 100 threads) and took ~8 % off a saturated target at 10 Hz.
* GIL ownership and the stacks of idle threads come from an occasional `py-spy dump --json`
  (2 Hz by default, ~2.5 % of a core) — the chrometrace output has neither.

py-spy children need no parent-death signal: a window ends by itself after a second and a
dump within milliseconds, and `stop()` interrupts the running one by pid.

We parse the files py-spy writes; its terminal output is never scraped for data, only its
last line read for the sample/error counts and for the reason when it fails.

Why this file is ~600 lines: the record windows, the dump fallback and the chrometrace parser
share one contract with py-spy (its argv, its pseudo-frames, its thread keys and our mapping
of them to the target's thread ids); split apart, a change to that contract would be three
edits that must agree.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from typing import Any

from lifescope.analysis.frames import innermost_app, label
from lifescope.analysis.frames import kind as innermost_kind
from lifescope.outputs import private_directory
from lifescope.probes.base import Emit, Probe, Ride
from lifescope.probes.budget import rate_within
from lifescope.probes.family import Family
from lifescope.probes.nspid import TidMap
from lifescope.samples import Frame, GilOwnership, StackSpan, StacksWindow
from lifescope.target import Target

STACKS_PER_SECOND = 1500
"""Thread-stacks per second the stacks probe allows itself. `--idle` makes py-spy emit every
thread at every tick and each one is parsed here; measured on this kind of machine, 200
threads at 100 Hz (20,000 stacks/s) took a whole core and still fell behind, while the
demo's handful of threads at 100 Hz (~500/s) cost ~6 %. Like the threads probe, the rate
comes down as the thread count goes up, to 10 Hz at most threads."""
DUMP_THREADS_PER_SECOND = 100
"""Threads per second `py-spy dump` may walk: 2 Hz up to 50 threads, 0.5 Hz from 200."""
MAX_STACKS_HZ = 100
MIN_STACKS_HZ = 10


def stacks_rate_for(thread_count: int, max_hz: int = MAX_STACKS_HZ) -> int:
    # py-spy takes a whole number of samples a second
    return int(rate_within(STACKS_PER_SECOND, thread_count, MIN_STACKS_HZ, max_hz))


def thread_count(pid: int) -> int:
    try:
        return max(1, len(os.listdir(f"/proc/{pid}/task")))
    except OSError:
        return 1


_THREAD_FRAME = re.compile(r"^thread \((\d+)\)(?::\s?(.*))?$")
_PROCESS_FRAME = re.compile(r"^process (\d+):")
_COUNTS = re.compile(r"Samples:\s*(\d+)\s+Errors:\s*(\d+)")


def find_pyspy() -> str | None:
    """The py-spy binary: $LIFESCOPE_PYSPY, then PATH, then beside this interpreter.

    pip puts py-spy next to the Python that installed it, which is often not on PATH
    (a venv that was not activated, `pipx`), hence the last place.
    """
    explicit = os.environ.get("LIFESCOPE_PYSPY")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("py-spy")
    if found:
        return found
    for directory in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = os.path.join(directory, "py-spy")
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def classify_failure(stderr: str, pid: int) -> tuple[str, str, str]:
    """(status, reason, remedy) for a py-spy run that produced nothing."""
    text = stderr.lower()
    last = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
    if "permission denied" in text or "operation not permitted" in text:
        return (
            "denied",
            f"py-spy may not read pid {pid}: {last}",
            "run as root, or grant CAP_SYS_PTRACE, or set kernel.yama.ptrace_scope=0",
        )
    if "no such process" in text or not os.path.exists(f"/proc/{pid}"):
        return ("gone", "the target process exited", "attach to a running process")
    return ("degraded", f"py-spy failed: {last}", "check `py-spy dump --pid PID` by hand")


def parse_chrometrace(
    events: Sequence[dict[str, Any]],
    end_mono: float,
    source: Callable[[str, int], str | None] | None = None,
    tid_of: Callable[[int, int], int] | None = None,
) -> tuple[tuple[Frame, ...], tuple[StackSpan, ...], tuple[tuple[int, str], ...]]:
    """Turn py-spy's begin/end events into per-thread spans of identical stacks.

    py-spy emits `B` when a frame appears at a sample and `E` when it is gone, per thread
    key; the outermost frame of every thread is a pseudo-frame `thread (OS_TID): NAME`.
    Timestamps are µs from the recording's start; `end_mono` (when py-spy finished) anchors
    its last event on our monotonic clock, which is accurate to py-spy's file-writing time
    (a few ms).

    With `--subprocesses` (a pre-fork master and its workers) py-spy's thread key is a
    pthread id that a forked worker shares with its master, so one key's events interleave
    the processes, each sample's stack under an extra pseudo-frame `process PID: CMDLINE`
    (and an `E` event may carry the next sample's pid). The key's stack is rebuilt the way
    py-spy writes it; each stack is then the sample of the process and thread its pseudo-
    frames name, and spans are made per (process, thread). `tid_of(pid, os_tid)` maps the
    OS thread id py-spy names to ours (a worker forked by uWSGI still names its master's).
    """
    frames: list[Frame] = []
    frame_index: dict[tuple[str, str, int], int] = {}
    pseudo: list[tuple[int, int, str]] = []
    """Pseudo-frames as (pid, os_tid, name); stored on stacks as -1 - index."""
    pseudo_index: dict[str, int] = {}
    open_stacks: dict[int, list[int]] = {}
    last_pid: dict[int, int] = {}
    names: dict[int, str] = {}
    current: dict[tuple[int, int], tuple[float, tuple[int, ...]]] = {}
    spans: list[StackSpan] = []
    last_ts = max((float(e.get("ts", 0)) for e in events), default=0.0)
    offset = end_mono - last_ts / 1e6
    ours: dict[tuple[int, int], int] = {}

    def our_tid(pid: int, os_tid: int) -> int:
        key = (pid, os_tid)
        if key not in ours:
            ours[key] = tid_of(pid, os_tid) if tid_of is not None else os_tid
        return ours[key]

    def close(who: tuple[int, int], ts: float) -> None:
        started = current.pop(who, None)
        if started is None or not started[1]:
            return
        start = offset + started[0] / 1e6
        end = offset + ts / 1e6
        spans.append(StackSpan(our_tid(*who), start, end, started[1]))

    by_ts: list[tuple[float, int, dict[str, Any]]] = [
        (float(e.get("ts", 0)), i, e) for i, e in enumerate(events) if e.get("ph") in ("B", "E")
    ]
    by_ts.sort(key=lambda item: (item[0], item[1]))
    changed: set[int] = set()
    pending_ts: float | None = None

    def flush(ts: float) -> None:
        for key in changed:
            pid, os_tid = last_pid.get(key, 0), key
            real: list[int] = []
            for entry in open_stacks.get(key, []):
                if entry >= 0:
                    real.append(entry)
                    continue
                p_pid, p_tid, p_name = pseudo[-1 - entry]
                if p_pid:
                    pid = p_pid
                else:
                    os_tid = p_tid
                    names[our_tid(pid, os_tid)] = p_name
            stack = tuple(reversed(real))
            who = (pid, os_tid)
            previous = current.get(who)
            if previous is not None and previous[1] == stack:
                continue
            close(who, ts)
            if stack:
                current[who] = (ts, stack)
        changed.clear()

    for ts, _, event in by_ts:
        if pending_ts is not None and ts != pending_ts:
            flush(pending_ts)
        pending_ts = ts
        key = int(event.get("tid", 0))
        name = str(event.get("name", ""))
        args = event.get("args") or {}
        stack = open_stacks.setdefault(key, [])
        changed.add(key)
        if event["ph"] == "E":
            if stack:
                stack.pop()
            continue
        if event.get("pid") is not None:
            last_pid[key] = int(event["pid"])
        if not args.get("filename"):
            index = pseudo_index.get(name)
            if index is None:
                process = _PROCESS_FRAME.match(name)
                thread = _THREAD_FRAME.match(name)
                entry = (
                    (int(process.group(1)), 0, "") if process
                    else (0, int(thread.group(1)), thread.group(2) or "") if thread
                    else (0, 0, "")
                )  # fmt: skip
                index = pseudo_index[name] = len(pseudo)
                pseudo.append(entry)
            stack.append(-1 - index)
            continue
        frame_key = (name, str(args.get("filename", "")), int(args.get("line", 0) or 0))
        index = frame_index.get(frame_key)
        if index is None:
            index = frame_index[frame_key] = len(frames)
            frames.append(Frame(*frame_key))
        stack.append(index)
    if pending_ts is not None:
        flush(pending_ts)
    for who in list(current):
        close(who, last_ts)
    if source is not None:
        annotate_source(frames, spans, source)
    return tuple(frames), tuple(spans), tuple(sorted(names.items()))


def last_sampled(events: Sequence[dict[str, Any]]) -> float | None:
    """The newest timestamp (µs) at which the file shows py-spy sampling, or None when it
    shows no sample. The newest of all is `write()` closing the slices left open."""
    stamps = sorted({float(e.get("ts", 0)) for e in events if e.get("ph") in ("B", "E")})
    return stamps[-2] if len(stamps) >= 2 else None


def annotate_source(
    frames: list[Frame], spans: Sequence[StackSpan], source: Callable[[str, int], str | None]
) -> None:
    """Give frames their source line, in place: innermost frames (what a thread sits in:
    `cur.execute(...)`), and the application's own frames anywhere (the line that calls the
    next handler tells middleware apart). Shared by py-spy's windows and the native walker's
    (`native_stacks.py`), so the analysis sees the same frames from either."""
    innermost = {span.stack[0] for span in spans if span.stack}
    innermost |= {i for i, f in enumerate(frames) if innermost_kind(f.file) == "app"}
    calls_next = getattr(source, "calls_next", None)
    for index in innermost:
        frame = frames[index]
        code = source(frame.file, frame.line)
        chains = bool(calls_next and innermost_kind(frame.file) == "app"
                      and calls_next(frame.file, frame.line))  # fmt: skip
        if code is not None or chains:
            frames[index] = Frame(frame.name, frame.file, frame.line, code, chains)


class SourceLines:
    """Source lines of the target's files, read from disk through /proc/PID/root.

    Reading a file the target imported never touches the target. Paths go through its root
    so a containerised server's files are found; files are cached, bounded in count.
    """

    MAX_FILES = 512

    def __init__(self, pid: int) -> None:
        self.root = f"/proc/{pid}/root"
        self._files: dict[str, list[str] | None] = {}
        self._calls: dict[tuple[str, int], bool] = {}

    def _lines(self, file: str) -> list[str] | None:
        if not file.startswith("/"):
            return None
        lines = self._files.get(file, ())
        if lines == ():
            if len(self._files) >= self.MAX_FILES:
                self._files.clear()
            try:
                with open(self.root + file, encoding="utf-8", errors="replace") as handle:
                    lines = handle.read(2_000_000).splitlines()
            except OSError:
                lines = None
            self._files[file] = lines
        return lines  # type: ignore[return-value]

    def __call__(self, file: str, line: int) -> str | None:
        lines = self._lines(file)
        if not lines or line <= 0 or line > len(lines):
            return None
        return lines[line - 1].strip()[:160] or None

    def calls_next(self, file: str, line: int) -> bool:
        """Whether the function around `line` calls the next handler of a chain — aiohttp's
        `handler(request)`, Starlette's `call_next`, Django's `get_response`, a WSGI or ASGI
        wrapper's `self.app(...)`: the mark of middleware, which its name may not carry
        (an aiohttp middleware `slow_auth` waiting before it calls in looks like a handler).
        Read from the function's source, as a reader would; cached per function."""
        key = (file, line)
        known = self._calls.get(key)
        if known is not None:
            return known
        lines = self._lines(file)
        found = False
        if lines and 0 < line <= len(lines):
            found = _function_calls_next(lines, line - 1)
        if len(self._calls) >= 4096:
            self._calls.clear()
        self._calls[key] = found
        return found


_CALLS_NEXT = re.compile(
    r"\b(handler|call_next|get_response|self\.app|self\.application|self\.wsgi_app)\s*\("
)
_DEF = re.compile(r"^(\s*)(async\s+)?def\s")


def _function_calls_next(lines: list[str], index: int) -> bool:
    """Scan the body of the function enclosing `lines[index]` for a call of the next handler."""
    start = index
    while start >= 0 and not _DEF.match(lines[start]):
        start -= 1
    if start < 0:
        return False
    indent = len(_DEF.match(lines[start]).group(1))  # type: ignore[union-attr]
    for text in lines[start + 1 : start + 400]:
        stripped = text.strip()
        if stripped and len(text) - len(text.lstrip()) <= indent and not stripped.startswith(")"):
            break  # the function has ended
        if _CALLS_NEXT.search(text):
            return True
    return False


class StacksProbe(Probe):
    """Rolling `py-spy record --idle` windows; each window becomes one StacksWindow sample.

    `--idle` matters: py-spy's chrometrace writer compares each thread's stack with the last
    one *recorded*, so without idle samples a thread that sleeps between two identical
    stacks looks busy throughout. With them, every thread is present at every tick and a
    span is exactly "this thread was in this stack" — waits included, which is what locating
    a request needs (a thread blocked in a DB call is idle to py-spy but is layer 4 to us).
    """

    probe_name = "stacks"

    def __init__(
        self,
        target: Target,
        emit: Emit,
        rate_hz: int = MAX_STACKS_HZ,
        window_s: float = 1.0,
        native: bool = False,
        family: Family | None = None,
        run_s: float | None = None,
    ) -> None:
        super().__init__(target, emit)
        self.family = family
        """With workers (a pre-fork master), one py-spy follows them all (`--subprocesses`)."""
        self.max_rate_hz = rate_hz
        self.rate_hz = rate_hz
        self.window_s = window_s
        self.run_s = max(window_s, run_s or window_s)
        """How long each py-spy process records; its output is cut into `window_s` windows.
        The first run is one window long, so stacks arrive within a second of attaching."""
        self._runs = 0
        self.native = native
        self.process: subprocess.Popen[bytes] | None = None
        self.source = SourceLines(target.pid)
        self.tids = TidMap(target.pid)
        self._worker_tids: dict[int, TidMap] = {}
        self.ride = Ride()
        """The GIL probe may take this probe's windows from the native walker
        (``gil.NATIVE_STACKS``)."""

    def walk_rate(self, scale: float) -> int:
        """Stacks a second, for py-spy or the walker alike: fewer with many threads (the cost
        is per thread), fewer while the machine's budget sheds load, never under 10 Hz."""
        workers = self.family.workers() if self.family is not None else ()
        threads = sum(thread_count(pid) for pid in (self.target.pid, *workers))
        rate = stacks_rate_for(threads, self.max_rate_hz)
        self.rate_hz = max(min(rate, MIN_STACKS_HZ), round(rate * scale))
        return self.rate_hz

    def stop(self) -> None:
        super().stop()
        proc = self.process
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)  # py-spy flushes and exits on SIGINT

    def sample_loop(self) -> None:
        if self.ride.wait(self, "stacks from lifescope's native walker, on the GIL loop"):
            return
        binary = find_pyspy()
        if binary is None:
            self.set_status(
                "unavailable", "py-spy not found", "pip install py-spy (or set LIFESCOPE_PYSPY)"
            )
            return
        backoff = 0.5
        with private_directory() as tmp:
            out = os.path.join(tmp, "window.json")
            while not self.stopping:
                windows = self._record(binary, out)
                if windows is not None:
                    self.set_status("ok")
                    for window in windows:
                        self.emit(window)
                    backoff = 0.5
                    continue
                if not os.path.exists(f"/proc/{self.target.pid}") or not self.target.alive():
                    self.set_status("gone", "the target process exited")
                    return
                if not self.sleep(backoff):
                    return
                backoff = min(backoff * 2, 10.0)

    def _record(self, binary: str, out: str) -> list[StacksWindow] | None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(out)
        run_s = self.run_s if self._runs else self.window_s
        self._runs += 1
        seconds = max(1, round(run_s))
        workers = self.family.workers() if self.family is not None else ()
        self.walk_rate(self.budget.scale)
        argv = [
            binary,
            "record",
            "--pid",
            str(self.target.pid),
            "--duration",
            str(seconds),
            "--rate",
            str(self.rate_hz),
            "--format",
            "chrometrace",
            "--output",
            out,
            "--threads",
            "--idle",
        ]
        argv.append("--native" if self.native else "--nonblocking")
        if workers:
            argv.append("--subprocesses")
        started = time.monotonic()
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # the "Samples: N Errors: E" line goes to stdout
        )
        try:
            err, _ = self.process.communicate(timeout=seconds + 5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            err, _ = self.process.communicate()
            self.errors += 1
            self.set_status("degraded", "py-spy hung; restarted", "none needed unless repeated")
            return None
        finally:
            self.process = None
        ended = time.monotonic()
        stderr = err.decode(errors="replace")
        try:
            with open(out, "rb") as handle:
                events = json.load(handle)
        except (OSError, ValueError):
            if not self.stopping:
                self.errors += 1
                self.set_status(*classify_failure(stderr, self.target.pid))
            return None
        counts = _COUNTS.search(stderr)
        samples, errors = (int(counts.group(1)), int(counts.group(2))) if counts else (0, 0)
        if isinstance(events, dict):
            events = events.get("traceEvents", [])
        pids: dict[int, int] = {}
        ended = _written_at(out, ended)
        frames, spans, names = parse_chrometrace(
            events, ended, self.source, lambda pid, tid: self._our_tid(pid, tid, pids)
        )
        start = max(started, ended - seconds)
        sampled = last_sampled(events)
        written = max((float(e.get("ts", 0)) for e in events), default=0.0)
        sampled_to = start if sampled is None else ended - (written - sampled) / 1e6
        whole = StacksWindow(
            ended, start, frames, spans, names, samples, errors, self.rate_hz,
            tuple(sorted(pids.items())), max(start, sampled_to),
        )  # fmt: skip
        # A run stopped early (SIGINT at the end of a recording) is cut by what it covered.
        return split_window(whole, max(1, round((ended - start) / max(self.window_s, 1e-3))))

    def _our_tid(self, pid: int, tid: int, pids: dict[int, int]) -> int:
        """The thread id to report, noting which process a worker's threads belong to. A
        worker forked after its app was loaded (uWSGI) still names its master's thread id
        for its main thread: not one of its own, so it is the worker's main thread."""
        if not pid or pid == self.target.pid:
            return self.tids.ours(tid)
        tids = self._worker_tids.get(pid)
        if tids is None:
            tids = self._worker_tids[pid] = TidMap(pid)
        tid = tids.ours(tid)
        if not os.path.exists(f"/proc/{pid}/task/{tid}"):
            tid = pid
        pids[tid] = pid
        return tid


def _written_at(path: str, ended: float) -> float:
    """When py-spy wrote `path`, on our monotonic clock: its exit and our wake-up come after,
    a few ms on a quiet machine and more when the collector waits for the GIL. The file's
    time is the wall clock's: one that says more than a second, the clock was stepped."""
    try:
        age = time.time() - os.stat(path).st_mtime
    except OSError:
        return ended
    written = time.monotonic() - age
    return written if ended - 1.0 < written < ended else ended


def split_window(window: StacksWindow, parts: int) -> list[StacksWindow]:
    """Cut one py-spy run into `parts` consecutive windows of equal length, so the stream
    looks the same whatever the run length: spans are clipped at the cuts (a span crossing
    one continues in the next window, as a span crossing two py-spy runs always did), each
    window carries only the frames its spans use, and the sample and error counts are shared
    out in proportion. Timestamps stay py-spy's own, per sample."""
    if parts <= 1:
        return [window]
    width = (window.t - window.start) / parts
    last = window.t
    out = []
    for i in range(parts):
        lo = window.start + i * width
        hi = window.t if i == parts - 1 else lo + width
        used: dict[int, int] = {}
        spans = []
        for span in window.spans:
            inside = max(span.start, lo) < min(span.end, hi)
            point = span.start == span.end and (lo <= span.start < hi or span.start == hi == last)
            if not (inside or point):
                continue
            stack = tuple(used.setdefault(f, len(used)) for f in span.stack)
            spans.append(StackSpan(span.tid, max(span.start, lo), min(span.end, hi), stack))
        frames = [window.frames[0]] * len(used)
        for old, new in used.items():
            frames[new] = window.frames[old]
        out.append(
            StacksWindow(
                hi, lo, tuple(frames), tuple(spans),
                window.thread_names,
                window.samples * (i + 1) // parts - window.samples * i // parts,
                window.errors * (i + 1) // parts - window.errors * i // parts,
                window.rate_hz,
                window.pids,
                None if window.sampled_to is None else min(max(window.sampled_to, lo), hi),
            )
        )  # fmt: skip
    return out


def parse_dump(
    threads: Sequence[dict[str, Any]], now: float, tid_of: Callable[[int], int] = int
) -> GilOwnership:
    """The instant `py-spy dump --json` describes: owners of the GIL, active threads, tops.
    ``tid_of`` as in :func:`parse_chrometrace`."""
    owners, active, names, tops = [], [], [], []
    for thread in threads:
        tid = tid_of(int(thread.get("os_thread_id") or thread.get("thread_id") or 0))
        names.append((tid, str(thread.get("thread_name") or "")))
        if thread.get("owns_gil"):
            owners.append(tid)
        if thread.get("active"):
            active.append(tid)
        stack = [
            Frame(str(f.get("name", "?")), str(f.get("filename", "")), int(f.get("line") or 0))
            for f in thread.get("frames") or ()
        ]
        top = innermost_app(stack)
        if top is not None:
            tops.append((tid, label(top)))
    return GilOwnership(now, tuple(owners), tuple(active), tuple(names), tuple(tops))


class DumpProbe(Probe):
    """Occasional `py-spy dump --json`: who owns the GIL and what each thread is in.

    A fallback: while the probes in `covered_by` (the GIL reader, the stacks windows) are
    healthy they already give all a dump would, so it stands by — it cost ~2.5 % of a core
    at 2 Hz, an eighth of the collector's idle CPU. It always runs once at attach, before the
    first stacks window arrives (a second later), so the thread pane has frames within a
    fraction of a second. That used to hang on a race: the other probes reported "ok" only
    after ~60 ms of ELF parsing, and once that got fast the first dump was skipped.
    """

    probe_name = "dump"

    def __init__(
        self,
        target: Target,
        emit: Emit,
        rate_hz: float = 2.0,
        covered_by: Sequence[Probe] = (),
    ) -> None:
        super().__init__(target, emit)
        self.rate_hz = rate_hz
        self.covered_by = tuple(covered_by)
        self.tids = TidMap(target.pid)

    def _covered(self) -> bool:
        # A degraded GIL probe (late reads while shedding) still covers; a degraded stacks
        # probe may be delivering no windows at all, and then a dump is the only stack.
        return bool(self.covered_by) and all(
            p.status == "ok" or (p.status == "degraded" and p.probe_name == "gil")
            for p in self.covered_by
        )

    def sample_loop(self) -> None:
        binary = find_pyspy()
        if binary is None:
            self.set_status(
                "unavailable", "py-spy not found", "pip install py-spy (or set LIFESCOPE_PYSPY)"
            )
            return
        failures = 0
        first = True
        while not self.stopping:
            if not first and self._covered():
                names = " and ".join(p.probe_name for p in self.covered_by)
                self.set_status("standby", f"not needed while {names} are ok")
                if not self.sleep(1.0):
                    return
                continue
            first = False
            started = time.monotonic()
            argv = [binary, "dump", "--json", "--nonblocking", "--pid", str(self.target.pid)]
            try:
                done = subprocess.run(
                    argv, capture_output=True, timeout=10, stdin=subprocess.DEVNULL
                )
                threads = json.loads(done.stdout) if done.returncode == 0 else None
            except (subprocess.TimeoutExpired, ValueError):
                threads = None
                done = None
            if isinstance(threads, list):
                failures = 0
                self.set_status("ok")
                self.emit(parse_dump(threads, (started + time.monotonic()) / 2, self.tids.ours))
            else:
                failures += 1
                stderr = done.stderr.decode(errors="replace") if done is not None else "timeout"
                status = classify_failure(stderr, self.target.pid)
                if status[0] == "gone" or not self.target.alive():
                    self.set_status("gone", "the target process exited")
                    return
                # A nonblocking read can tear while the target changes its stacks (seen
                # about once in two minutes under load); only repeated failures are errors.
                if failures >= 3:
                    self.errors += 1
                    self.set_status(*status)
            # A dump costs ~12 ms of CPU with a few threads and ~43 ms with 100: slow down
            # with the thread count as the other per-thread probes do.
            budget = DUMP_THREADS_PER_SECOND / thread_count(self.target.pid)
            rate = min(self.rate_hz, max(0.5, budget))
            delay = 1.0 / rate * min(8, 2 ** max(0, failures - 1))
            if not self.sleep(delay - (time.monotonic() - started)):
                return
