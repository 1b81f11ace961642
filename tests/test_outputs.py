"""What lifescope writes never touches what it did not create (it runs as root on production
hosts): /dev/null, a planted symlink, a FIFO, a directory and an existing file are refused and
left byte-for-byte and mode-for-mode as they were; `--force` replaces a regular file with a new
one; the target's secrets stay out of recordings and snapshots."""

from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lifescope import outputs, redact
from lifescope.recording import load
from tests.conftest import PYTHON, stop_pid

FIXTURE = Path(__file__).parent / "fixtures" / "demo-session.lsr"


def lifescope(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([PYTHON, "-m", "lifescope", *args], capture_output=True, timeout=timeout)


def one_line_error(done: subprocess.CompletedProcess[bytes]) -> str:
    err = done.stderr.decode().strip()
    assert done.returncode == 1, (done.returncode, err)
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture
def target() -> Iterator[subprocess.Popen[bytes]]:
    """A Python process whose command line carries secrets, as real ones do."""
    proc = subprocess.Popen(
        [PYTHON, "-c", "import time; print('READY', flush=True); time.sleep(60)",
         "--password=hunter2", "--db", "postgres://app:s3cr3t@127.0.0.1/app",
         "API_TOKEN=tok-123", "--token", "abcdef", "--workers=2"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().startswith(b"READY")
    yield proc
    stop_pid(proc)


def _fingerprint(path: str) -> tuple[int, int, int, bytes | None]:
    """What must not change: mode, owner, inode, and the bytes of a regular file."""
    st = os.lstat(path)
    data = Path(path).read_bytes() if stat.S_ISREG(st.st_mode) else None
    return st.st_mode, st.st_uid, st.st_ino, data


WRITERS: dict[str, Callable[[str, str], list[str]]] = {
    "record": lambda pid, out: ["record", pid, "-o", out, "--seconds", "1", "--probes", "threads"],
    "snapshot": lambda pid, out: ["snapshot", pid, "--seconds", "1", "-o", out],
    "export": lambda pid, out: ["export", str(FIXTURE), "-o", out],
}


@pytest.fixture
def victims(tmp_path: Path) -> dict[str, str]:
    """Each kind of path lifescope must refuse, with something worth protecting behind it."""
    victim = tmp_path / "victim.conf"
    victim.write_text("precious\n")
    victim.chmod(0o644)
    link = tmp_path / "planted.lsr"
    link.symlink_to(victim)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    directory = tmp_path / "dir"
    directory.mkdir()
    existing = tmp_path / "existing.json"
    existing.write_text("old\n")
    existing.chmod(0o640)
    return {
        "/dev/null": "/dev/null",
        "symlink": str(link),
        "fifo": str(fifo),
        "directory": str(directory),
        "existing file": str(existing),
        "victim": str(victim),
    }


@pytest.mark.parametrize("command", sorted(WRITERS))
@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("/dev/null", "is a device"),
        ("symlink", "is a symbolic link"),
        ("fifo", "is a FIFO"),
        ("directory", "is a directory"),
        ("existing file", "exists — pass --force"),
    ],
)
def test_refused_and_left_as_it_was(
    command: str, kind: str, why: str, victims: dict[str, str], target: subprocess.Popen[bytes]
) -> None:
    path = victims[kind]
    before = _fingerprint(path), _fingerprint(victims["victim"])
    done = lifescope(*WRITERS[command](str(target.pid), path))
    err = one_line_error(done)
    assert path in err and why in err, err
    assert (_fingerprint(path), _fingerprint(victims["victim"])) == before
    assert target.poll() is None


def test_attach_refuses_before_the_screen_changes(
    victims: dict[str, str], target: subprocess.Popen[bytes]
) -> None:
    before = _fingerprint(victims["victim"])
    done = lifescope("attach", str(target.pid), "--record", victims["symlink"])
    assert "is a symbolic link" in one_line_error(done)
    assert _fingerprint(victims["victim"]) == before


def test_dev_null_keeps_its_mode_after_every_writer(target: subprocess.Popen[bytes]) -> None:
    """The bug that broke apt-get on this machine: `-o /dev/null` re-moded it to 0600."""
    mode = os.stat("/dev/null").st_mode
    for command, argv in WRITERS.items():
        done = lifescope(*argv(str(target.pid), "/dev/null"))
        assert done.returncode == 1, (command, done.stderr)
        assert os.stat("/dev/null").st_mode == mode, command
    # Metrics only: no -o at all, and no file is opened.
    assert stat.S_IMODE(mode) == 0o666


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_force_replaces_a_regular_file_with_a_new_one(
    command: str, tmp_path: Path, target: subprocess.Popen[bytes]
) -> None:
    path = tmp_path / "out"
    path.write_text("old\n")
    path.chmod(0o644)
    hard = tmp_path / "another-name-for-the-old-file"
    os.link(path, hard)  # whoever else holds the old file keeps it unchanged
    old_inode = path.stat().st_ino
    done = lifescope(*WRITERS[command](str(target.pid), str(path)), "--force")
    assert done.returncode == 0, done.stderr
    st = path.stat()
    assert st.st_ino != old_inode, "a new file renamed over the old name, not the old one rewritten"
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert hard.read_text() == "old\n" and stat.S_IMODE(hard.stat().st_mode) == 0o644
    assert path.read_bytes() != b"old\n"
    assert [p.name for p in tmp_path.iterdir() if "lifescope-tmp" in p.name] == []


def test_new_files_are_private_and_stdout_works(
    tmp_path: Path, target: subprocess.Popen[bytes]
) -> None:
    for command, argv in WRITERS.items():
        path = tmp_path / f"new-{command}"
        done = lifescope(*argv(str(target.pid), str(path)))
        assert done.returncode == 0, (command, done.stderr)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, command
    done = lifescope("export", str(FIXTURE), "--format", "snapshot", "-o", "-")
    assert done.returncode == 0 and json.loads(done.stdout)["schema"].startswith(
        "lifescope.snapshot"
    )


def test_an_export_that_fails_midway_leaves_nothing_under_its_name(tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    with pytest.raises(RuntimeError), outputs.open_atomic(str(path)) as out:
        out.write(b"half of it")
        raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []
    path.write_text("old\n")
    with pytest.raises(RuntimeError), outputs.open_atomic(str(path), force=True) as out:
        out.write(b"half of it")
        raise RuntimeError("crash mid-write")
    assert [p.name for p in tmp_path.iterdir()] == ["export.json"]
    assert path.read_text() == "old\n"


def test_secrets_in_the_command_line_are_redacted(
    tmp_path: Path, target: subprocess.Popen[bytes]
) -> None:
    secrets = ("hunter2", "s3cr3t", "tok-123", "abcdef")
    rec = tmp_path / "s.lsr"
    assert lifescope("record", str(target.pid), "-o", str(rec), "--seconds", "1",
                     "--probes", "threads").returncode == 0  # fmt: skip
    raw = gzip.open(rec).read().decode()
    command = load(str(rec)).hello.command
    assert "--workers=2" in command and "postgres://app:" in command and "API_TOKEN=" in command
    for secret in secrets:
        assert secret not in raw, secret
    snap = lifescope("snapshot", str(target.pid), "--seconds", "1", "--json")
    assert snap.returncode == 0, snap.stderr
    for secret in secrets:
        assert secret.encode() not in snap.stdout, secret
    kept = lifescope("snapshot", str(target.pid), "--seconds", "1", "--json", "--keep-command-line")
    assert all(secret.encode() in kept.stdout for secret in secrets)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--password=x"], ["--password=<redacted>"]),
        (["--password", "x", "--port", "8000"], ["--password", "<redacted>", "--port", "8000"]),
        (["DATABASE_URL=postgres://u:p@h/db"], ["DATABASE_URL=postgres://u:<redacted>@h/db"]),
        (["SECRET_KEY=abc"], ["SECRET_KEY=<redacted>"]),
        (["https://h/cb?token=abc&x=1"], ["https://h/cb?token=<redacted>&x=1"]),
        (["--bind", "0.0.0.0:8000", "app:app"], ["--bind", "0.0.0.0:8000", "app:app"]),
        (["--api-key=k", "-w", "4"], ["--api-key=<redacted>", "-w", "4"]),
    ],
)
def test_redaction_rules(args: list[str], expected: list[str]) -> None:
    assert redact.argv(args) == expected


def test_collector_alone_refuses_too(
    victims: dict[str, str], target: subprocess.Popen[bytes]
) -> None:
    """`python -m lifescope.collector PID -o /dev/null` re-moded /dev/null the same way."""
    mode = os.stat("/dev/null").st_mode
    argv = ["-m", "lifescope.collector", str(target.pid), "-o", "/dev/null", "--seconds", "1"]
    done = subprocess.run([sys.executable, *argv], capture_output=True, timeout=60)
    assert done.returncode == 1 and b"is a device" in done.stderr
    assert os.stat("/dev/null").st_mode == mode


async def test_the_uis_screenshot_goes_through_the_same_door(tmp_path: Path) -> None:
    """Textual's own screenshot (command palette) writes as root too: same rules."""
    from lifescope.replay import Player
    from lifescope.ui.app import LifescopeApp

    app = LifescopeApp(player=Player(load(str(FIXTURE))))
    async with app.run_test(size=(80, 24)):
        saved = Path(app.save_screenshot("shot.svg", str(tmp_path)))
        assert saved.read_text().startswith("<svg") and stat.S_IMODE(saved.stat().st_mode) == 0o600
        (tmp_path / "link.svg").symlink_to(tmp_path / "elsewhere")
        with pytest.raises(outputs.OutputError, match="symbolic link"):
            app.save_screenshot("link.svg", str(tmp_path))
        assert not (tmp_path / "elsewhere").exists()


def test_private_temp_dirs_are_0700_and_a_killed_collectors_is_swept(
    target: subprocess.Popen[bytes],
) -> None:
    """py-spy's windows (stacks, file paths) live in a 0700 directory of the collector's; if
    the collector is SIGKILLed it cannot remove it, so the next one does."""
    import tempfile
    import time

    from lifescope.options import CollectorOptions
    from lifescope.session import CollectorProcess

    def dirs_of(pid: int) -> list[Path]:
        return list(Path(tempfile.gettempdir()).glob(f"lifescope-{pid}-*"))

    first = CollectorProcess(target.pid, CollectorOptions(probes=("stacks",)))
    try:
        deadline = time.monotonic() + 20
        while not dirs_of(first.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        (left,) = dirs_of(first.pid)
        assert stat.S_IMODE(left.stat().st_mode) == 0o700
        os.kill(first.pid, 9)
        first.proc.wait()
        assert left.exists()
    finally:
        first.stop()
    second = CollectorProcess(target.pid, CollectorOptions(probes=("stacks",)))
    try:
        deadline = time.monotonic() + 20
        while left.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not left.exists(), "the dead collector's directory is swept by the next one"
    finally:
        second.stop()
    assert dirs_of(second.pid) == [], "and its own is removed when it ends"
