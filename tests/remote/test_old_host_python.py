"""The bundled collector on a host whose newest Python is 3.8 (the UI needs 3.10+).

The host is this machine with pyenv's CPython 3.8 as its Python (`LIFESCOPE_REMOTE_PYTHON`)
and a local shell as the transport (see local_shell.py); the target is a real server.
3.8 is older than anything lifescope's UI runs on; the collector runs there through
`remote.compat`, and since symbols come from lifescope's own ELF reader (pyelftools, which
needs 3.10, is no longer used) the GIL is read from the target's memory there too, by the
pure-Python loop (no compiled helper is shipped for the host's Python).
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Callable, Iterator

import pytest

from lifescope.analysis import gil
from lifescope.options import CollectorOptions
from lifescope.remote import spec
from lifescope.remote.link import RemoteSession
from lifescope.samples import GilRuns, ProbeStatus, SocketsSample, StacksWindow, ThreadsSample
from lifescope.session import CollectorFailed

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON38 = sorted(glob.glob("/root/.pyenv/versions/3.8.*/bin/python3.8"))

SERVER = """
import http.server, threading, time
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
def hog():
    while True:
        sum(range(20000))
threading.Thread(target=hog, name="gil-hog", daemon=True).start()
print("READY", flush=True)
time.sleep(120)
"""


@pytest.fixture
def local_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("LIFESCOPE_SSH", f"{sys.executable} {HERE}/local_shell.py")
    yield


@pytest.mark.skipif(not PYTHON38, reason="no pyenv CPython 3.8 on this machine")
def test_bundle_runs_on_a_host_python_38(
    local_host: None, monkeypatch: pytest.MonkeyPatch, python_target: Callable[..., object]
) -> None:
    monkeypatch.setenv("LIFESCOPE_REMOTE_PYTHON", PYTHON38[-1])
    target = python_target(SERVER)
    remote = spec.parse(f"ssh://localhost/{target.pid}")  # type: ignore[attr-defined]
    session = RemoteSession(remote, CollectorOptions(seconds=5), reconnect=False)
    got = list(session.samples())
    first = session.first
    assert first is not None and first.mode == "bundle" and first.host_python.startswith("3.8")
    assert "memory readers" not in first.bundle_note
    statuses = {s.probe: s for s in got if isinstance(s, ProbeStatus)}
    for probe in ("threads", "stacks", "sockets", "gil"):
        assert statuses[probe].status == "ok", (probe, statuses[probe])
    assert "pure-Python GIL loop" in (statuses["gil"].reason or "")
    assert any(isinstance(s, ThreadsSample) for s in got)
    assert any(isinstance(s, StacksWindow) and s.spans for s in got)
    assert any(isinstance(s, SocketsSample) and s.sockets for s in got)
    runs = [s for s in got if isinstance(s, GilRuns)]
    assert runs, "no GIL history from the memory reader"
    history = gil.holds(runs, runs[0].start, runs[-1].t)
    held = sum(end - start for start, end, holder in history.runs if holder > 0)
    # The target's hog thread loops in `sum(range(...))` and holds the GIL but for the switch
    # interval, while the HTTP thread idles: the GIL is held nearly all of the time.
    assert history.covered > 2.0 and held / history.covered > 0.7, (held, history.covered)


def test_a_host_without_python_is_told_what_it_needs(
    local_host: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # the host has sh, and no python on its PATH
    monkeypatch.setenv("LIFESCOPE_SSH", f"{sys.executable} {HERE}/local_shell.py")
    monkeypatch.delenv("LIFESCOPE_REMOTE_PYTHON", raising=False)
    session = RemoteSession(spec.parse("ssh://localhost/1"), CollectorOptions(), reconnect=False)
    with pytest.raises(CollectorFailed, match=r"no CPython 3\.8\+ .*install python3"):
        list(session.samples())
