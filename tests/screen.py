"""A real terminal for tests: a detached tmux session whose screen is read with capture-pane."""

from __future__ import annotations

import shutil
import subprocess

import pytest

needs_tmux = pytest.mark.skipif(
    shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)"
)


class Tmux:
    """One command in a detached tmux session of a chosen size: a terminal that can be read,
    typed into, resized and closed."""

    def __init__(self, name: str, cols: int = 100, rows: int = 30) -> None:
        self.name = name
        self.cols = cols
        self.rows = rows

    def start(self, command: str) -> int:
        """Start `command` (through the shell); returns the pane's pid.

        The shell tmux starts may export COLUMNS and LINES from the pane's size before tmux
        resized it (seen: 80 and 24 in a 140×40 pane), and Textual believes them over the
        terminal: they are unset, so the program reads its terminal's real size."""
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", self.name, "-x", str(self.cols),
             "-y", str(self.rows), f"unset COLUMNS LINES; {command}"],
            check=True,
        )  # fmt: skip
        out = subprocess.run(
            ["tmux", "list-panes", "-t", self.name, "-F", "#{pane_pid}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return int(out.stdout.split()[0])

    def screen(self) -> str:
        out = subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True
        )
        return out.stdout

    def lines(self) -> list[str]:
        """The screen's rows, each padded to the terminal's width."""
        rows = self.screen().split("\n")[: self.rows]
        return [row.ljust(self.cols) for row in rows]

    def size(self) -> tuple[int, int]:
        out = subprocess.run(
            ["tmux", "display", "-p", "-t", self.name, "#{window_width} #{window_height}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        cols, rows = out.stdout.split()
        return int(cols), int(rows)

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def kill(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)
