"""Shared plumbing for the overhead, cost, UI and comparison benchmarks (not a benchmark itself).

Everything here reads /proc or starts and stops processes by pid; nothing measures on its own.

* CPU of a process *tree* (``tree_cpu``): the process's own utime+stime, its reaped children
  (cutime+cstime: the collector's finished py-spy windows and dumps) and its live descendants
  (the py-spy window running now), read consistently (retried if a child was reaped mid-read).
* CPU on the clock of a target (``schedstat_ns``): the first field of every
  ``/proc/PID/task/*/schedstat`` (ns on a CPU), summed over threads.
* ``Collector``: ``python -m lifescope.collector PID`` with a probe set, stream to a file.
  A probe name the collector does not know yet but lifescope ships (``tasks``) is added by a
  tiny wrapper that extends ``build_probes`` in the bench's collector process only.
* ``PySpy``: a bare ``py-spy`` command a user would run (``record --native`` for contrast,
  ``record`` at 100 Hz, a ``dump`` loop), stopped by pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from lifescope import collector as collector_module
from lifescope import stream
from lifescope.probes.pyspy import find_pyspy

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TICK = os.sysconf("SC_CLK_TCK")

# A collector with `tasks` available even where the collector does not list it yet.
COLLECTOR = """
import os, sys
from lifescope import collector
if os.environ.get("LIFESCOPE_BENCH_NO_FIFO"):  # diagnosis only: the GIL sampler at normal priority
    import lifescope.probes.gil
    lifescope.probes.gil._realtime = lambda: False
if os.environ.get("LIFESCOPE_BENCH_PACKETS_BATCH_S"):  # diagnosis only: drain packets in batches
    import select, time, types
    import lifescope.probes.packets
    _batch = float(os.environ["LIFESCOPE_BENCH_PACKETS_BATCH_S"])
    class _BatchPoll:
        # wake every _batch s (or sooner for the probe's own timers), not on every packet
        def __init__(self):
            self._poll = select.poll()
        def register(self, *args):
            self._poll.register(*args)
        def poll(self, ms=None):
            time.sleep(min(_batch, (ms or 0) / 1000))
            return self._poll.poll(0)
    lifescope.probes.packets.select = types.SimpleNamespace(poll=_BatchPoll, POLLIN=select.POLLIN)
if "tasks" not in collector.PROBES:
    from lifescope.probes.tasks import TasksProbe
    _build = collector.build_probes
    def build_probes(target, emit, names, *args, **kwargs):
        probes = _build(target, emit, [n for n in names if n != "tasks"], *args, **kwargs)
        if "tasks" in names:
            probes.append(TasksProbe(target, emit))
        return probes
    collector.build_probes = build_probes
    collector.PROBES = (*collector.PROBES, "tasks")
sys.exit(collector.main(sys.argv[1:]))
"""

DEFAULT_PROBES: tuple[str, ...] = tuple(collector_module.PROBES)


def probe_available(name: str) -> bool:
    if name in DEFAULT_PROBES:
        return True
    if name == "tasks":
        try:
            import lifescope.probes.tasks  # noqa: F401
        except ImportError:
            return False
        return True
    return False


# ----------------------------------------------------------------------------------- /proc


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def own_cpu(pid: int) -> tuple[float, float]:
    """(self utime+stime, reaped children cutime+cstime) in seconds."""
    f = _stat_fields(pid)
    return (int(f[11]) + int(f[12])) / TICK, (int(f[13]) + int(f[14])) / TICK


def children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        with contextlib.suppress(OSError):
            kids += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    return kids


def _live_tree_cpu(pid: int) -> float:
    total = 0.0
    for kid in children(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            mine, reaped = own_cpu(kid)
            total += mine + reaped + _live_tree_cpu(kid)
    return total


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid``, its reaped children and its live descendants, so far."""
    for _ in range(5):
        before = own_cpu(pid)
        live = _live_tree_cpu(pid)
        after = own_cpu(pid)
        if after[1] == before[1]:  # no child reaped while we read: consistent
            return after[0] + after[1] + live
    return after[0] + after[1] + live


def schedstat_ns(pid: int) -> int:
    """Nanoseconds on a CPU of every live thread of ``pid`` (first schedstat field)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
    return total


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy so far (all CPUs; /proc/stat, USER_HZ)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = f[:8]
    return (user + nice + system + irq + softirq + steal) / TICK


class Foreign:
    """How much of the machine processes *not* started by this benchmark used over a phase.

    The machine is shared: a test suite starting in the middle of a saturation phase takes a
    third of the CPU and looks like a 30 % slowdown. Our own CPU is the tree of this process
    (everything it started, reaped or live); the rest of /proc/stat's busy time is foreign.
    """

    def __init__(self) -> None:
        self.me = os.getpid()
        self.cpus = os.cpu_count() or 1
        self.t, self.busy, self.mine = time.monotonic(), machine_busy(), tree_cpu(self.me)

    def share(self) -> float:
        t, busy, mine = time.monotonic(), machine_busy(), tree_cpu(self.me)
        foreign = (busy - self.busy) - (mine - self.mine)
        return max(0.0, foreign) / (self.cpus * max(1e-6, t - self.t))


def ctx_switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of every live thread of ``pid`` so far."""
    vol = invol = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    vol += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    invol += int(line.split()[1])
    return vol, invol


def rss_bytes(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return 0


def tree_rss(pid: int) -> int:
    return rss_bytes(pid) + sum(tree_rss(kid) for kid in children(pid))


def pin(pid: int, cpus: Iterable[int]) -> None:
    """Pin every thread of ``pid`` (threads created later inherit it from their creator)."""
    mask = set(cpus)
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), mask)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def spread(values: Sequence[float], digits: int = 4) -> dict[str, float | int | None]:
    """Median with min-max: the only summary any benchmark here quotes."""
    vals = [v for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": round(statistics.median(vals), digits),
        "min": round(min(vals), digits),
        "max": round(max(vals), digits),
        "n": len(vals),
    }


def fmt_spread(s: dict[str, float | int | None], scale: float = 1.0, digits: int = 3) -> str:
    if s.get("median") is None:
        return "—"
    med, lo, hi = (float(s[k]) * scale for k in ("median", "min", "max"))  # type: ignore[arg-type]
    return f"{med:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"


def stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, grace: float = 5) -> None:
    """Stop one process we started, by its pid: ``sig``, then SIGKILL; always reaped."""
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------ processes


class Collector:
    """``python -m lifescope.collector PID --probes ...``, its stream written to a temp file."""

    def __init__(
        self,
        pid: int,
        probes: Sequence[str] | None = None,
        new_session: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.file = tempfile.NamedTemporaryFile(prefix="lifescope-bench-", suffix=".jsonl")
        self.err = tempfile.TemporaryFile()
        # Always name the probes: the wrapper adds `tasks` to the list the collector accepts,
        # and must not add it to the defaults.
        names = DEFAULT_PROBES if probes is None else tuple(probes)
        argv = [sys.executable, "-c", COLLECTOR, str(pid), "--probes", ",".join(names)]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self.file,
            stderr=self.err,
            start_new_session=new_session,
            env=None if env is None else {**os.environ, **env},
        )
        self.pid = self.proc.pid
        self.new_session = new_session

    def signal_group(self, sig: int) -> None:
        """Signal the collector and its py-spy children at once (needs ``new_session``):
        SIGSTOP/SIGCONT pause and resume watching without restarting anything."""
        if self.new_session:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def cpu(self) -> float:
        return tree_cpu(self.pid)

    def stop(self) -> None:
        if self.err.closed:
            return
        if self.proc.poll() is None:
            self.signal_group(signal.SIGCONT)  # a stopped collector cannot handle SIGTERM
        stop(self.proc)
        if not self.err.closed:
            self.err.seek(0)
            err = self.err.read().decode(errors="replace").strip()
            self.err.close()
            if self.proc.returncode not in (0, -signal.SIGTERM) and err:
                print(f"collector {self.pid}: {err.splitlines()[-1]}", file=sys.stderr)

    def samples(self) -> list[object]:
        with open(self.file.name, "rb") as handle:
            out: list[object] = []
            with contextlib.suppress(stream.StreamError):
                for sample in stream.read(handle):
                    out.append(sample)
            return out

    def close(self) -> None:
        self.stop()
        self.file.close()


def pyspy_binary() -> str:
    binary = find_pyspy()
    if binary is None:
        raise SystemExit("py-spy not found (pip install py-spy)")
    return binary


def start_pyspy_record(
    pid: int, seconds: float, rate: int = 100, native: bool = False, lifescope_like: bool = True
) -> tuple[subprocess.Popen[bytes], tempfile.TemporaryDirectory[str]]:
    """One ``py-spy record`` for ``seconds`` (stopped early by SIGINT if need be).

    ``lifescope_like`` records what the stacks probe records (chrometrace, --threads --idle);
    otherwise the command a user would type (a flame graph SVG). ``native`` swaps
    ``--nonblocking`` for ``--native``, which py-spy only does by pausing the target.
    """
    tmp = tempfile.TemporaryDirectory(prefix="lifescope-bench-")
    argv = [pyspy_binary(), "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    argv += ["--rate", str(rate)]
    if lifescope_like:
        argv += ["--format", "chrometrace", "--threads", "--idle"]
        argv += ["--output", os.path.join(tmp.name, "out.json")]
    else:
        argv += ["--output", os.path.join(tmp.name, "out.svg")]
    argv.append("--native" if native else "--nonblocking")
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return proc, tmp


DUMP_LOOP = """
import subprocess, sys, time
binary, pid, hz = sys.argv[1], sys.argv[2], float(sys.argv[3])
argv = [binary, "dump", "--pid", pid, "--nonblocking"]
next_at = time.monotonic()
while True:
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=10)
    next_at += 1.0 / hz
    delay = next_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    else:
        next_at = time.monotonic()
"""


def start_dump_loop(pid: int, hz: float) -> subprocess.Popen[bytes]:
    """``py-spy dump --nonblocking`` in a loop at ``hz``, as a user's watch script would."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(DUMP_LOOP), pyspy_binary(), str(pid), str(hz)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )


class Pty:
    """A program on a pseudo-terminal (80×24) whose output is read and thrown away, as a
    terminal would show it: ``py-spy top`` refuses to run without one."""

    def __init__(self, argv: Sequence[str]) -> None:
        import fcntl
        import pty
        import struct
        import termios
        import threading

        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        self.proc = subprocess.Popen(
            list(argv),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            env={**os.environ, "TERM": os.environ.get("TERM", "xterm")},
        )
        os.close(slave)
        self.bytes = 0
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.bytes += len(data)

    def close(self) -> None:
        stop(self.proc, signal.SIGINT)
        with contextlib.suppress(OSError):
            os.close(self.master)
        self._reader.join(1.0)


def dump_loop_cpu(pid: int) -> float:
    """CPU of the py-spy children of a dump loop only (reaped + live), not of the loop script."""
    _, reaped = own_cpu(pid)
    return reaped + _live_tree_cpu(pid)


def sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)
