"""Play a recording back through a timeline, at a chosen speed, with seeking.

The UI asks the player for "now" instead of reading a pipe; everything downstream (timeline,
analysis, panes) is the live code path, so a replay shows exactly what the live session
showed for the same window.
"""

from __future__ import annotations

from lifescope.recording import Recording
from lifescope.timeline import Timeline

SPEEDS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


class Player:
    def __init__(self, recording: Recording) -> None:
        self.recording = recording
        keyed = [(getattr(s, "t", recording.start), i, s) for i, s in enumerate(recording.samples)]
        keyed.sort(key=lambda item: (item[0], item[1]))
        self._times = [t for t, _, _ in keyed]
        self._samples = [s for _, _, s in keyed]
        self.speed = 1.0
        self.playing = True
        self._reset()

    def _reset(self) -> None:
        self.timeline = Timeline()
        self._index = 0
        self.position = self.recording.start

    @property
    def start(self) -> float:
        return self.recording.start

    @property
    def end(self) -> float:
        return self.recording.end

    @property
    def finished(self) -> bool:
        return self.position >= self.end

    def tick(self, wall_seconds: float) -> None:
        if self.playing and not self.finished:
            self.seek(self.position + wall_seconds * self.speed)

    def seek(self, t: float) -> None:
        """Move to recording time `t`; going back rebuilds the timeline from the start."""
        t = max(self.start, min(self.end, t))
        if t < self.position:
            self._reset()
        while self._index < len(self._samples) and self._times[self._index] <= t:
            self.timeline.add(self._samples[self._index])
            self._index += 1
        self.position = t

    def step(self, seconds: float) -> None:
        self.seek(self.position + seconds)

    def faster(self) -> None:
        self.speed = next((s for s in SPEEDS if s > self.speed), SPEEDS[-1])

    def slower(self) -> None:
        self.speed = next((s for s in reversed(SPEEDS) if s < self.speed), SPEEDS[0])
