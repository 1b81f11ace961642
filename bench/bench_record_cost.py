"""What `lifescope record PID --seconds 20` costs, all of it, on a server with one busy thread.

    python bench/bench_record_cost.py [--quick] [--rounds 5] [--seconds 20]
        [--base DIR] [--per-probe gil,threads,...] [--probe-seconds 10] [--py315] [--anchors]

Issue 17's method. The target is an aiohttp server (idle: nobody calls it) with one thread
spinning in pure Python, so the GIL is always in use and the GIL sampler never idles.
Each tool is run as a child of this process, which is made a *child subreaper*
(``PR_SET_CHILD_SUBREAPER``) so that a py-spy the tool leaves behind is re-parented here and
reaped too; the tool's CPU is the growth of ``RUSAGE_CHILDREN`` over its run — every process
it started, from ``exec`` to exit, start-up and interpreter import included — divided by the
run's wall time (also start-up included). The target is our child too but is reaped only at
the end, so its CPU is never in the sum.

Tools, interleaved round by round so a noisy neighbour hits them alike (the machine is shared):

* ``lifescope`` — this checkout (``python -m lifescope record PID --seconds N -o FILE``).
* ``base`` — the same command on another source tree (``--base DIR``, put first on
  ``PYTHONPATH``), e.g. ``git archive`` of the commit before a change: before/after side by side.
* ``py-spy`` — ``py-spy record --rate 100 --nonblocking -d N -o out.svg`` (what a user runs).
* ``cpython-sampler`` — with ``--py315``: CPython 3.15's ``python -m profiling.sampling attach
  -a -d N`` (1 kHz, all threads), run chrooted in Debian's 3.15 against a 3.15 target.

Per probe (``--per-probe``): ``--probes X --full-rate`` for ``--probe-seconds`` each, the
same way, for this checkout and ``--base``.

Both trees are byte-compiled first, as ``pip install .`` leaves an installed package (this
machine sets ``PYTHONDONTWRITEBYTECODE=1``: an uncompiled tree costs ~0.5 s more CPU at every
start); ``--no-compile`` skips that.

Results go to ``bench/results/record_cost.json``; numbers are median (min–max) of the rounds.
``--quick`` (one 3 s round, no per-probe) only asserts that numbers came out.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import ctypes
import gzip
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _harness as h

from lifescope import stream
from lifescope.samples import CollectorCost

TARGET = """
import sys, threading
from aiohttp import web

def spin():
    x = 0
    while True:  # pure Python: holds the GIL but for the switch interval
        x += 1

threading.Thread(target=spin, name="busy", daemon=True).start()

async def hello(request):
    return web.Response(text="ok")

app = web.Application()
app.router.add_get("/", hello)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""

PR_SET_CHILD_SUBREAPER = 36
DEBIAN_315 = Path.home() / ".cache" / "lifescope" / "debian-cpython" / "3.15"


def subreaper() -> None:
    """Orphans of the tools (a py-spy outliving its collector) become ours to reap and count."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Target:
    """The busy-thread aiohttp server on `python` (a host interpreter or a 3.15 wrapper)."""

    def __init__(self, python: str | None) -> None:
        """``python`` None: Debian's 3.15, chrooted in a mount namespace of its own where
        /proc is bind-mounted into the root, so that 3.15's sampler, entering that namespace
        (``nsenter -m``), sees the target's files at the paths its /proc/PID/maps names."""
        self.dir = tempfile.TemporaryDirectory(prefix="lifescope-bench-")
        script = Path(self.dir.name) / "busy_server.py"
        script.write_text(TARGET)
        self.port = free_port()
        if python is None:
            root = DEBIAN_315 / "root"
            (root / "app" / "lifescope-bench-busy.py").write_text(TARGET)
            argv = ["unshare", "-m", "sh", "-c",
                    f"mount --bind /proc {root}/proc && exec chroot {root} /usr/bin/python3.15 "
                    f"/app/lifescope-bench-busy.py {self.port}"]  # fmt: skip
            env = {**os.environ, "PYTHONPATH": "/site", "LC_ALL": "C"}
        else:
            argv, env = [python, str(script), str(self.port)], None
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env
        )
        self.pid = self.proc.pid
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                break
            if self.proc.poll() is not None:
                raise SystemExit(f"target on {python} exited ({self.proc.returncode})")
            time.sleep(0.1)
        else:
            raise SystemExit(f"target on {python} did not listen within 30 s")
        time.sleep(1.0)  # imports done, the busy thread running

    def stop(self) -> None:
        h.stop(self.proc)
        self.dir.cleanup()


def reap_orphans(keep: set[int], grace: float = 5.0) -> None:
    """Wait for (and so count) every child that is not a target; kill stragglers by pid."""
    deadline = time.monotonic() + grace
    while True:
        kids = set(h.children(os.getpid())) - keep
        if not kids:
            return
        for pid in kids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        if time.monotonic() > deadline:
            for pid in kids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
            return
        time.sleep(0.05)


def run_tool(
    argv: list[str], env: dict[str, str] | None, keep: set[int]
) -> dict[str, float | None]:
    """One run: CPU seconds of everything it started / wall seconds, start-up included."""
    reap_orphans(keep)
    cpu0, t0 = children_cpu(), time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=None if env is None else {**os.environ, **env},
    )
    _, err = proc.communicate(timeout=120)
    wall = time.monotonic() - t0
    reap_orphans(keep)
    cpu = children_cpu() - cpu0
    if proc.returncode != 0:
        print(f"  ! {argv[:4]}… exited {proc.returncode}: {err.decode()[-300:]}", file=sys.stderr)
    result = {"cpu_s": round(cpu, 3), "wall_s": round(wall, 3), "share": round(cpu / wall, 4)}
    if "record" in argv and "-o" in argv:
        result["shed_share"] = shed_share(argv[argv.index("-o") + 1])
    return result


def shed_share(path: str) -> float | None:
    """Share of the recording's once-a-second cost samples taken while the collector shed
    load (`rate_scale` < 1): at defaults a saturated machine quarters the rates, and the CPU
    of such a run is not the cost by design."""
    try:
        with gzip.open(path, "rb") as handle:
            costs = [s for s in stream.read(handle) if isinstance(s, CollectorCost)]
    except (OSError, EOFError, stream.StreamError):
        return None
    if not costs:
        return None
    return round(sum(c.rate_scale < 1.0 for c in costs) / len(costs), 3)


def lifescope_argv(pid: int, seconds: float, out: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "lifescope", "record", str(pid), "--seconds", f"{seconds:g}",
            "-o", out, "--force", *extra]  # fmt: skip


def tools_for(
    target: Target, seconds: float, base: str | None, skip_self: bool, out: str, extra: list[str]
) -> dict[str, tuple[list[str], dict[str, str] | None]]:
    tools: dict[str, tuple[list[str], dict[str, str] | None]] = {}
    if not skip_self:
        tools["lifescope"] = (lifescope_argv(target.pid, seconds, out, extra), None)
    if base:
        tools["base"] = (
            lifescope_argv(target.pid, seconds, out, extra),
            {"PYTHONPATH": str(Path(base).resolve())},
        )
    return tools


def anchors(target: Target, seconds: float, py315: bool, tmp: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "py-spy": (
            [h.pyspy_binary(), "record", "--pid", str(target.pid), "--rate", "100",
             "--duration", f"{max(1, round(seconds))}", "--nonblocking",
             "-o", os.path.join(tmp, "out.svg")],
            None,
        ),
    }  # fmt: skip
    if py315:
        out["cpython-sampler"] = (
            ["nsenter", "-t", str(target.pid), "-m", "chroot", str(DEBIAN_315 / "root"),
             "/usr/bin/python3.15", "-m", "profiling.sampling",
             "attach", "-a", "-d", f"{max(1, round(seconds))}", "--collapsed",
             "-o", "/tmp/lifescope-bench-sampler.txt", str(target.pid)],
            {"LC_ALL": "C", "LANG": "C"},
        )  # fmt: skip
    return out


def measure(
    tools: dict[str, tuple[list[str], dict[str, str] | None]], rounds: int, keep: set[int]
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float | None]]] = {name: [] for name in tools}
    for i in range(rounds):
        order = list(tools) if i % 2 == 0 else list(reversed(tools))
        for name in order:
            argv, env = tools[name]
            run = run_tool(argv, env, keep)
            runs[name].append(run)
            shed = run.get("shed_share")
            note = f"  (shedding {shed:.0%} of the run)" if shed else ""
            print(f"  round {i + 1} {name:16} {(run['share'] or 0) * 100:6.2f} % of a core{note}",
                  flush=True)  # fmt: skip
    return {
        name: {
            "share": h.spread([r["share"] for r in rs]),
            "cpu_s": h.spread([r["cpu_s"] for r in rs], 3),
            "runs": rs,
        }
        for name, rs in runs.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--base", help="another source tree (its src/) to run as `base`")
    parser.add_argument(
        "--per-probe",
        default="",
        help="comma-separated probes, each alone; gil+stacks runs those two together",
    )
    parser.add_argument("--probe-seconds", type=float, default=10.0)
    parser.add_argument("--probe-rounds", type=int, default=3)
    parser.add_argument("--anchors", action="store_true", help="py-spy record on the target")
    parser.add_argument("--py315", action="store_true", help="also a 3.15 target + its sampler")
    parser.add_argument("--no-defaults", action="store_true", help="per-probe/anchors only")
    parser.add_argument(
        "--full-rate",
        action="store_true",
        help="the defaults run with --full-rate too (load shedding off: on a busy shared "
        "machine shedding may quarter the rates and hide what the probes cost)",
    )
    parser.add_argument(
        "--no-compile", action="store_true", help="leave the trees without .pyc files"
    )
    parser.add_argument("--skip-self", action="store_true", help="only --base (and anchors)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.per_probe, args.py315 = 1, 3.0, "", False
    subreaper()
    if not args.no_compile:
        # `pip install .` compiles every module at install time; this machine sets
        # PYTHONDONTWRITEBYTECODE=1, so an editable tree would recompile ~100 modules at each
        # start (0.5 s of CPU) — measure both trees as installed ones instead.
        import lifescope

        trees = [Path(lifescope.__file__).parent]
        if args.base:
            trees.append(Path(args.base) / "lifescope")
        for tree in trees:
            compileall.compile_dir(str(tree), quiet=1, legacy=False, force=False)
    result: dict[str, Any] = {
        "method": __doc__,
        "params": vars(args),
        "loadavg_before": h.loadavg(),
    }
    tmp = tempfile.TemporaryDirectory(prefix="lifescope-bench-")
    out = os.path.join(tmp.name, "rec.gz")
    versions = ["3.11", "3.15"] if args.py315 else ["3.11"]
    targets: list[tuple[str, Target]] = []
    try:
        for version in versions:
            # One target at a time: each keeps a core busy, and two would saturate this machine.
            for _, old in targets:
                old.stop()
            target = Target(sys.executable if version == "3.11" else None)
            targets.append((version, target))
            keep = {target.pid}
            print(f"target CPython {version}, pid {target.pid}", flush=True)
            section: dict[str, Any] = {}
            tools = tools_for(target, args.seconds, args.base, args.skip_self, out, [])
            if version != "3.11":
                tools.pop("base", None)  # the base tree is not installed in the 3.15 root
            if args.anchors or version == "3.15":
                tools.update(anchors(target, args.seconds, version == "3.15", tmp.name))
            if not args.no_defaults or version == "3.15":
                section["defaults"] = measure(tools, args.rounds, keep)
            if args.full_rate and version == "3.11":
                ftools = tools_for(
                    target, args.seconds, args.base, args.skip_self, out, ["--full-rate"]
                )
                print(" defaults --full-rate", flush=True)
                section["full_rate"] = measure(ftools, args.rounds, keep)
            if args.per_probe and version == "3.11":
                per: dict[str, Any] = {}
                for probe in args.per_probe.split(","):
                    extra = ["--probes", probe.replace("+", ","), "--full-rate"]
                    ptools = tools_for(
                        target, args.probe_seconds, args.base, args.skip_self, out, extra
                    )
                    print(f" probe {probe}", flush=True)
                    per[probe] = measure(ptools, args.probe_rounds, keep)
                section["per_probe"] = per
            result[version] = section
    finally:
        for _, target in targets:
            target.stop()
        tmp.cleanup()
    result["loadavg_after"] = h.loadavg()
    print(f"\nown CPU, % of a core, median (min–max); load {result['loadavg_before']} → "
          f"{result['loadavg_after']}")  # fmt: skip
    for version in versions:
        section = result[version]
        for name, v in section.get("defaults", {}).items():
            print(f"  {version} {name:16} {h.fmt_spread(v['share'], 100, 1)}")
        for name, v in section.get("full_rate", {}).items():
            print(f"  {version} {name:16} --full-rate {h.fmt_spread(v['share'], 100, 1)}")
        for probe, tools_ in section.get("per_probe", {}).items():
            cells = "  ".join(f"{n} {h.fmt_spread(v['share'], 100, 1)}" for n, v in tools_.items())
            print(f"  {version} probe {probe:8} {cells}")
    h.RESULTS.mkdir(exist_ok=True)
    name = "record_cost_quick.json" if args.quick else "record_cost.json"
    (h.RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    for version in versions:
        for v in result[version].get("defaults", {}).values():
            assert (
                v["share"]["median"] is not None
                and statistics.median(r["cpu_s"] for r in v["runs"]) > 0
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
