"""Where the app's samples come from: a live collector or a recording, behind one protocol.

The app asks a source three things — bring the timeline up to now (`advance`), where the
window on screen ends (`end`), and what to say about it in the header (`state`) — and tells
it two (`pause`, `seek`/`speed`, the last two only when `can_seek`). Live and replay differ
only in here, so the app holds no `if replay` branches, and a test can drive every edge state
(a target gone, a probe denied, an empty window) by handing the app samples through
`LiveSource(samples=...)`, without a live process.

No Textual here: a source is plain Python that a test can build and step on its own.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from lifescope.options import DEFAULTS, CollectorOptions
from lifescope.replay import Player
from lifescope.samples import Sample
from lifescope.session import CollectorFailed, CollectorProcess
from lifescope.timeline import Timeline

if TYPE_CHECKING:
    from lifescope.remote.link import RemoteSession

LIVE_HORIZON_S = 60.0
"""What the live UI keeps: the panes show the last 10 s; `--record` keeps everything on
disk. With the Timeline's default 10 minutes, `lifescope demo` left alone grew ~17 MiB a
minute until the horizon bit (bench/soak_ui.py)."""
QUEUE_MAX = 50_000
"""Decoded samples waiting for the UI thread; beyond this they are counted and dropped."""

SampleStream = Callable[[], Iterable[Sample]]
"""What a live source reads: a function returning the samples, in order, until they end."""


@dataclass(frozen=True, slots=True)
class State:
    """The header's first words: what the screen is showing and how sure it is."""

    text: str
    style: str
    """A Rich style name ("bold red"): the header colours it; no markup inside `text`."""
    note: str = ""
    """A second, quieter part (a reconnection's countdown, a damaged recording's note)."""


class Source(Protocol):
    """What the app needs from the thing that feeds it samples."""

    failure: str | None
    """Why the stream ended early (the collector's own one-line error), if it did."""
    dropped: int
    """Samples dropped because the UI fell behind (see `QUEUE_MAX`)."""

    @property
    def timeline(self) -> Timeline:
        """What has been seen so far, up to `end`."""

    @property
    def can_seek(self) -> bool:
        """Replay keys (seek, step, speed) apply."""

    @property
    def can_switch(self) -> bool:
        """`w` may switch to another process of the same server (a local, live pid)."""

    def start(self) -> None:
        """Begin reading (a live source starts its reader thread here, once the app runs)."""

    def advance(self) -> None:
        """Move the timeline to now: drain what arrived, or play the recording on."""

    @property
    def end(self) -> float | None:
        """The end of the window to show; None means the newest sample."""

    def pause(self, paused: bool) -> None:
        """The user paused (or resumed). Live, the probes keep sampling; a replay stops."""

    def seek(self, seconds: float) -> None: ...

    def speed(self, direction: int) -> None: ...

    def state(self, paused: bool, wall: Callable[[float], float]) -> State:
        """The header's state words; `wall` turns a collector timestamp into wall time."""

    def waiting_for(self) -> str:
        """What the header names before the first sample: a pid, a host, a file."""

    def stop(self) -> None:
        """End reading and whatever it started (the collector); safe to call twice."""


class LiveSource:
    """Samples as they arrive from a collector (local or `ssh://`), or from any iterable.

    A reader thread decodes the stream into a bounded queue and never touches the app; the
    app's timer drains the queue into the timeline on its own thread (`advance`). When the
    UI falls behind, the queue absorbs a burst; beyond `QUEUE_MAX` samples are counted in
    `dropped`, never blocking the reader (which would stall the collector's pipe).
    """

    can_seek = False

    def __init__(
        self,
        pid: int | None = None,
        *,
        samples: SampleStream | None = None,
        options: CollectorOptions = DEFAULTS,
        remote: RemoteSession | None = None,
    ) -> None:
        self.pid = pid
        self.options = options
        self.remote = remote
        self._samples = samples
        self.collector: CollectorProcess | RemoteSession | None = None
        self.timeline = Timeline(horizon_s=LIVE_HORIZON_S)
        self.failure: str | None = None
        self.dropped = 0
        self._queue: queue.Queue[Sample] = queue.Queue(maxsize=QUEUE_MAX)
        self._reader: threading.Thread | None = None
        self._ended = threading.Event()

    @property
    def can_switch(self) -> bool:
        return self._samples is None and self.remote is None and self.pid is not None

    def start(self) -> None:
        if self._reader is not None:
            return
        read = self._samples
        if read is None and self.remote is not None:
            self.collector = self.remote
            read = self.remote.samples
        elif read is None and self.pid is not None:
            self.collector = CollectorProcess(self.pid, self.options)
            read = self.collector.samples
        if read is None:
            self._ended.set()
            return
        self._reader = threading.Thread(
            target=self._read, args=(read,), name="lifescope-reader", daemon=True
        )
        self._reader.start()

    def _read(self, read: SampleStream) -> None:
        """Reader thread: only fills the bounded queue; a broken stream is a state to show."""
        try:
            for sample in read():
                try:
                    self._queue.put_nowait(sample)
                except queue.Full:
                    self.dropped += 1
        except CollectorFailed as exc:
            self.failure = str(exc)
        except Exception as exc:
            self.failure = f"stream ended: {exc}"
        finally:
            self._ended.set()

    @property
    def ended(self) -> bool:
        """The stream has ended (the collector stopped, or a test's samples ran out)."""
        return self._ended.is_set()

    def advance(self) -> None:
        while True:
            try:
                sample = self._queue.get_nowait()
            except queue.Empty:
                return
            self.timeline.add(sample)

    @property
    def end(self) -> float | None:
        return None

    def pause(self, paused: bool) -> None:
        """Nothing to do: pausing freezes the panes, never the probes."""

    def seek(self, seconds: float) -> None:
        """Live time only moves forward."""

    def speed(self, direction: int) -> None:
        """Live time runs at one speed."""

    def state(self, paused: bool, wall: Callable[[float], float]) -> State:
        if self.failure is not None:
            return State(f"✖ {self.failure}", "bold red")
        gone = self.timeline.gone
        if gone is not None:
            when = time.strftime("%H:%M:%S", time.localtime(wall(gone.t)))
            return State(f"✖ TARGET GONE at {when} — data kept", "bold red")
        down = self.timeline.link_down
        if down is not None:
            when = time.strftime("%H:%M:%S", time.localtime(down.wall_start))
            note = ""
            remote = self.remote
            if remote is not None and remote.retry_at is not None:
                wait = max(0.0, remote.retry_at - time.monotonic())
                note = f"; reconnecting: try {remote.attempt} in {wait:.0f} s"
            return State(f"⚠ LINK DOWN since {when} — data kept", "bold red", note)
        if paused:
            return State("⏸ PAUSED", "bold yellow")
        if self._ended.is_set() and self.collector is not None:
            return State("✖ collector stopped", "bold red")
        return State("● live", "bold green")

    def waiting_for(self) -> str:
        """What the header names while no sample has arrived yet."""
        if self.remote is not None:
            return str(self.remote.target)
        return f"pid {self.pid}"

    def stop(self) -> None:
        if self.collector is not None:
            self.collector.stop()
        if self._reader is not None and (self.remote is not None or self._samples is not None):
            # A remote session's reader closes the local recording on its way out.
            self._reader.join(timeout=5)


class ReplaySource:
    """A recording played through the same timeline, at a chosen speed, with seeking."""

    can_seek = True
    can_switch = False
    failure: str | None = None
    dropped = 0

    def __init__(self, player: Player, clock: Callable[[], float] = time.monotonic) -> None:
        self.player = player
        self._clock = clock
        self._last = clock()

    @property
    def timeline(self) -> Timeline:
        return self.player.timeline

    def start(self) -> None:
        self._last = self._clock()

    def advance(self) -> None:
        now = self._clock()
        self.player.tick(now - self._last)
        self._last = now

    @property
    def end(self) -> float | None:
        return self.player.position

    def pause(self, paused: bool) -> None:
        self.player.playing = not paused
        self._last = self._clock()

    def seek(self, seconds: float) -> None:
        self.player.step(seconds)

    def speed(self, direction: int) -> None:
        if direction > 0:
            self.player.faster()
        else:
            self.player.slower()

    def state(self, paused: bool, wall: Callable[[float], float]) -> State:
        player = self.player
        mark = "▶" if player.playing and not player.finished else "⏸"
        text = (
            f"{mark} REPLAY {_clock(player.position - player.start)}"
            f"/{_clock(player.end - player.start)} ×{player.speed:g}"
        )
        problem = player.recording.problem
        return State(text, "bold magenta", f" ({problem})" if problem else "")

    def waiting_for(self) -> str:
        return self.player.recording.path

    def stop(self) -> None:
        """A recording holds nothing open."""


def iterate(samples: Iterable[Sample]) -> SampleStream:
    """A fixed list of samples as a live stream (tests: edge states without a process)."""

    def read() -> Iterator[Sample]:
        yield from samples

    return read


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"
