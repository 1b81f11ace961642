"""The one way lifescope opens a file a user named: recordings, exports, reports.

lifescope runs as root on production hosts, so every path it writes is a privileged write, and
the first version wrote like a user tool: `-o /dev/null` re-moded /dev/null to 0600 (every
non-root writer broke until it was reset by hand), a planted symlink in a shared /tmp had root
overwrite the file it pointed at, and an existing file was replaced without a word. Here:

- a new file is created exclusively (``O_CREAT|O_EXCL|O_NOFOLLOW``), mode 0600, and is the only
  thing ever ``fchown``ed or given a mode — never a path lifescope did not create;
- a symlink, device, FIFO, socket or directory is refused with one line naming the path and
  why; ``-`` means standard output;
- an existing regular file is replaced only with ``force``, and then by a new file written
  beside it and renamed over it, so the old one is never written through or truncated;
- `atomic` outputs (exports) appear under their name only once complete: a crash mid-write
  leaves the old file, or nothing. Recordings (`stream`) appear at once and grow: their
  gzip stream is flushed every 100 ms so a crash leaves a readable prefix.

Under ``sudo``, files are handed to the invoking user (``SUDO_UID``/``SUDO_GID``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

MODE = 0o600
"""Outputs describe a production process (its command line, code paths, peers): never group-
or world-readable."""

STDOUT = "-"


class OutputError(Exception):
    """A path lifescope refuses to write, or cannot; the message is one line with the fix."""


def _refusal(path: str, st: os.stat_result) -> str | None:
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return "is a symbolic link; lifescope does not write through links — name the file itself"
    if stat.S_ISDIR(mode):
        return "is a directory — name a file inside it"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device; lifescope only writes regular files — name a new file"
    if stat.S_ISFIFO(mode):
        return "is a FIFO; lifescope only writes regular files — name a new file"
    if stat.S_ISSOCK(mode):
        return "is a socket; lifescope only writes regular files — name a new file"
    if not stat.S_ISREG(mode):
        return "is not a regular file — name a new file"
    return None


def check(path: str, force: bool = False) -> bool:
    """Refuse what must never be written; True if `path` is an existing regular file to be
    replaced (only with `force`)."""
    if path == STDOUT:
        return False
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise OutputError(f"{path}: {exc.strerror} — choose a writable path") from None
    refusal = _refusal(path, st)
    if refusal is not None:
        raise OutputError(f"{path} {refusal}")
    if not force:
        raise OutputError(f"{path} exists — pass --force to replace it, or name a new file")
    return True


def _create_exclusive(path: str) -> int:
    """A new file at `path`, ours alone: fails rather than open anything already there."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, MODE)
    except FileExistsError:
        raise OutputError(
            f"{path} appeared while lifescope was opening it — name a new file"
        ) from None
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror} — choose a writable path") from None
    os.fchmod(fd, MODE)  # the umask may have taken bits away; this file is our own
    _give_to_invoking_user(fd)
    return fd


def _give_to_invoking_user(fd: int) -> None:
    """Under sudo, what lifescope writes belongs to the user who ran it, not to root."""
    if os.geteuid() != 0:
        return
    uid, gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
    if uid and gid and uid.isdigit() and gid.isdigit():
        with contextlib.suppress(OSError):
            os.fchown(fd, int(uid), int(gid))


def _sibling(path: str) -> str:
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.{secrets.token_hex(4)}.lifescope-tmp")


def open_stream(path: str, force: bool = False) -> BinaryIO:
    """A file that grows while lifescope runs (a recording): under its name from the start.

    Replacing an existing file (`force`) renames a new empty file over it first, so the old
    file is never written through.
    """
    if path == STDOUT:
        return sys.stdout.buffer
    if check(path, force):
        tmp = _sibling(path)
        fd = _create_exclusive(tmp)
        try:
            os.rename(tmp, path)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise OutputError(f"cannot replace {path}: {exc.strerror}") from None
    else:
        fd = _create_exclusive(path)
    return os.fdopen(fd, "wb")


@contextlib.contextmanager
def open_atomic(path: str, force: bool = False) -> Iterator[BinaryIO]:
    """A file written in one go (an export, a report): it appears under `path` only when the
    block ends without an error; until then it is a hidden file beside it."""
    if path == STDOUT:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    check(path, force)
    tmp = _sibling(path)
    out = os.fdopen(_create_exclusive(tmp), "wb")
    try:
        yield out
        out.flush()
        os.fsync(out.fileno())
        out.close()
        if force:
            os.rename(tmp, path)  # replaces the name (even a link planted since), not its target
        else:
            os.link(tmp, path)  # fails if anything appeared under the name meanwhile
            os.unlink(tmp)
    except FileExistsError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OutputError(
            f"{path} appeared while lifescope was writing it — name a new file"
        ) from None
    except BaseException:
        out.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_TEMP_PREFIX = "lifescope-"


@contextlib.contextmanager
def private_directory() -> Iterator[str]:
    """A temporary directory only we can enter (0700), removed when the block ends — and, if
    a lifescope was SIGKILLed before it could remove its own, by the next one: the name
    carries the creating pid, and a directory whose pid is gone and that we own is swept."""
    _sweep_stale()
    path = tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{os.getpid()}-")  # mkdtemp: mode 0700
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _sweep_stale() -> None:
    root = tempfile.gettempdir()
    with contextlib.suppress(OSError):
        for name in os.listdir(root):
            pid = name[len(_TEMP_PREFIX) :].split("-", 1)[0]
            if not name.startswith(_TEMP_PREFIX) or not pid.isdigit():
                continue
            path = os.path.join(root, name)
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                # Ours, a real directory (never a link), and its creator is gone.
                if st.st_uid == os.geteuid() and stat.S_ISDIR(st.st_mode) and not _alive(int(pid)):
                    shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
