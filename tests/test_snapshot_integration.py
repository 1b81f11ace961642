"""`lifescope snapshot --json` against the real demo server: the scripting contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from lifescope.demo.children import DemoServer, LoadGen


def snapshot(pid: int, seconds: float = 4.0) -> dict:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lifescope",
            "snapshot",
            str(pid),
            "--seconds",
            str(seconds),
            "--json",
        ],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


def _on_cpu_s(pid: int) -> dict[int, float]:
    """Seconds on a CPU per thread (schedstat's first field): a clock of its own, in ns."""
    seconds = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as stat:
            seconds[int(tid)] = int(stat.read().split()[0]) / 1e9
    return seconds


def test_snapshot_of_loaded_demo_server(loaded_demo: tuple[DemoServer, LoadGen]) -> None:
    server, _ = loaded_demo
    before, clock = _on_cpu_s(server.pid), time.monotonic()
    report = snapshot(server.pid)
    after, elapsed = _on_cpu_s(server.pid), time.monotonic() - clock

    assert report["schema"] == "lifescope.snapshot/1"
    assert report["target"]["pid"] == server.pid
    assert report["target"]["python"].startswith(f"{sys.version_info[0]}.{sys.version_info[1]}")
    assert 3.0 <= report["window_s"] <= 5.0
    for name in ("gil", "threads", "stacks", "sockets"):
        probe = report["probes"][name]
        assert probe["status"] == "ok", (name, probe)
        assert probe["samples"] > 0, name
    # py-spy dump is the fallback for the GIL reader and the stacks windows; both are ok here.
    assert report["probes"]["dump"]["status"] == "standby", report["probes"]["dump"]
    assert report["probes"]["threads"]["rate_hz"] >= 20

    names = {t["name"]: t for t in report["threads"]}
    assert "gil-hog" in names, names.keys()
    hog = names["gil-hog"]
    assert hog["gil_share"] >= 0.5, hog
    # The CPU the hog really got, over the snapshot's run (its window plus start-up): a
    # CPU-bound thread, but beside other work it gets what the scheduler gives it (seen:
    # 0.24 of a core with a CPU hog on this 2-core machine, where ">= 0.3" failed).
    true_share = (after[hog["tid"]] - before[hog["tid"]]) / elapsed
    assert abs(hog["cpu_share"] - true_share) <= 0.15, (hog, true_share)
    assert hog["top_frame"] and "gil_hog" in hog["top_frame"], hog
    for thread in report["threads"]:
        for key in ("cpu_share", "active_share", "gil_share"):
            value = thread[key]
            assert value is None or 0.0 <= value <= 1.0, (key, thread)
    assert report["gil"]["source"] == "memory"
    assert report["gil"]["held_share"] >= 0.5

    conn = report["connections"]
    listen = [entry for entry in conn["listen"] if entry["local"].endswith(f":{server.port}")]
    assert len(listen) == 1, conn["listen"]
    assert listen[0]["backlog"] == 128
    assert 0 <= listen[0]["accept_queue"] <= listen[0]["backlog"]
    assert conn["by_state"].get("ESTABLISHED", 0) >= 1, conn["by_state"]
    assert 0 < conn["fds"] < conn["fd_limit"]


def test_snapshot_text_report(demo_server: DemoServer) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lifescope", "snapshot", str(demo_server.pid), "--seconds", "2"],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    text = done.stdout.decode()
    assert f"pid {demo_server.pid}" in text
    assert "gil-hog" in text
    assert f":{demo_server.port}" in text
