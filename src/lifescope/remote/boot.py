"""Runs on the host, sent over the ssh channel (never installed there): find or receive the
collector, then run it until the channel closes.

Protocol, after the shell line of `transport` execs the host's newest CPython 3.8+ on this
program (argv: its own size, the lifescope version wanted, the collector's argv):

1. host → local, one line: ``lifescope-remote READY installed python=X.Y.Z`` when a
   lifescope of exactly this version imports there (its stream follows at once); otherwise
   ``lifescope-remote SEND python=X.Y.Z machine=M lzma=0|1 pyspy=VERSION|-``;
2. local → host: the bundle's size in bytes on one line, then the bundle (a zip, see
   `bundle`); the host unpacks it into a new 0700 directory and answers
   ``lifescope-remote READY bundle python=X.Y.Z``;
3. host → local: the sample stream (`lifescope.stream`), until either side ends it.

Cleanup: the private directory is removed when the collector returns, when the watchdog in
`agent` ends the process after the channel closed, and, for a process killed with SIGKILL,
by the next session on that host (the directory's name carries the pid that made it).

Python 3.8 syntax, stdlib only, no lifescope imports before the bundle is unpacked.
"""

import io
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile

PREFIX = "lifescope-remote-"
OUT = sys.stdout.buffer
IN = sys.stdin.buffer


def say(line):
    OUT.write(("lifescope-remote " + line + "\n").encode())
    OUT.flush()


def python_version():
    return ".".join(str(n) for n in sys.version_info[:3])


def installed(version):
    """An installed lifescope of this very version (a host where it was pip-installed)."""
    try:
        import lifescope
        from lifescope.remote import agent  # noqa: F401
    except Exception:
        return False
    if getattr(lifescope, "__version__", None) != version:
        for name in [m for m in sys.modules if m == "lifescope" or m.startswith("lifescope.")]:
            del sys.modules[name]  # the bundle's copy must be the one imported later
        return False
    return True


def pyspy_version():
    path = shutil.which("py-spy")
    if path is None:
        return "-"
    try:
        out = subprocess.run([path, "--version"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, timeout=10).stdout  # fmt: skip
    except Exception:
        return "-"
    words = out.decode(errors="replace").split()
    return words[-1] if words else "-"


def has_lzma():
    try:
        import lzma  # noqa: F401
    except ImportError:
        return 0
    return 1


def sweep(root):
    """Directories left by a session killed with SIGKILL: ours, real directories, creator gone."""
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        pid = name[len(PREFIX) :].split("-", 1)[0]
        if not name.startswith(PREFIX) or not pid.isdigit():
            continue
        path = os.path.join(root, name)
        try:
            st = os.lstat(path)
            if st.st_uid != os.geteuid() or not stat.S_ISDIR(st.st_mode):
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue


def main(argv):
    version, collector_argv = argv[0], argv[1:]
    if installed(version):
        from lifescope.remote import agent

        return agent.run(collector_argv, "READY installed python=" + python_version())
    import platform

    say(f"SEND python={python_version()} machine={platform.machine()} lzma={has_lzma()} "
        f"pyspy={pyspy_version()}")  # fmt: skip
    size = int(IN.readline())
    data = IN.read(size)
    if len(data) != size:
        return 3  # the link closed while the bundle was on its way
    root = tempfile.gettempdir()
    sweep(root)
    directory = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")  # mode 0700

    def cleanup():
        shutil.rmtree(directory, ignore_errors=True)

    try:
        zipfile.ZipFile(io.BytesIO(data)).extractall(directory)
        del data
        pyspy = os.path.join(directory, "bin", "py-spy")
        if os.path.exists(pyspy):
            os.chmod(pyspy, 0o700)
            os.environ["LIFESCOPE_PYSPY"] = pyspy
        sys.path.insert(0, directory)
        from lifescope.remote import agent

        return agent.run(collector_argv, "READY bundle python=" + python_version(), cleanup)
    finally:
        cleanup()


sys.exit(main(sys.argv[2:]))
