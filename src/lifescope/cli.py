"""Command line: `lifescope attach|snapshot|demo|doctor`.

Errors a user can fix are one line on stderr with the fix and a non-zero exit: 2 for usage
(not a pid), 1 for a process we cannot watch. No traceback ever reaches the terminal for
those.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lifescope import __version__, outputs, privsep
from lifescope.options import RECORD_STACKS_RUN, CollectorOptions
from lifescope.target import Target, TargetError, parse_pid, resolve

if TYPE_CHECKING:
    from lifescope.recording import Recording
    from lifescope.remote.spec import RemoteTarget


def _add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"lifescope {__version__}")


PID_HELP = (
    "process id of a CPython 3.8–3.15 (or newer) process, or ssh://[user@]host[:port]/PID for "
    "one on another machine (collector there, UI here; nothing to install there)"
)
SUDO_HELP = "ssh:// only: run the collector on the host with `sudo -n` (a target of another user)"
SAMPLING = ("probes", "http_lines", "full_rate", "lean", "keep_command_line")
"""Options every live subcommand takes (attach, snapshot, record)."""


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="lifescope",
        description="Watch a running Python server's requests, threads, event loop, GIL and "
        "sockets, live, from outside the process.",
    )
    _add_version(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    subs: dict[str, argparse.ArgumentParser] = {}

    def command(name: str, help: str) -> argparse.ArgumentParser:
        subs[name] = sub.add_parser(name, help=help)
        _add_version(subs[name])
        return subs[name]

    attach = command("attach", "open the live UI on a running Python process")
    attach.add_argument("pid", help=PID_HELP)
    CollectorOptions.add_arguments(attach, ("record", "force", *SAMPLING))
    attach.add_argument("--sudo", action="store_true", help=SUDO_HELP)
    # What `demo --web` runs for each visitor: the demo's own UI (stage line, keys 1-8, its
    # title) on a demo server and load generator that belong to the `demo` process.
    attach.add_argument("--demo-stage", nargs=3, metavar=("URL", "SERVER_CONTROL", "LOAD_CONTROL"),
                        help=argparse.SUPPRESS)  # fmt: skip

    snap = command("snapshot", "sample headless for N seconds and print a report")
    snap.add_argument("pid", nargs="?", help=PID_HELP)
    snap.add_argument("--json", action="store_true", help="print lifescope.snapshot/1 JSON")
    snap.add_argument(
        "--from",
        dest="source",
        metavar="FILE",
        help="report on a recording instead of a live process",
    )
    snap.add_argument(
        "--at",
        type=float,
        default=None,
        metavar="T",
        help="with --from: end of the window, seconds from the recording's start",
    )
    CollectorOptions.add_arguments(snap, ("seconds", "output", "force", *SAMPLING))
    snap.add_argument("--sudo", action="store_true", help=SUDO_HELP)

    record = command(
        "record", "record a session headless to a file (mode 0600), and/or serve it as metrics"
    )
    record.add_argument("pid", help=PID_HELP)
    CollectorOptions.add_arguments(
        record,
        ("output", "seconds", "force", *SAMPLING, "prometheus", "prometheus_allow_remote",
         "prometheus_window"),
    )  # fmt: skip
    record.add_argument("--sudo", action="store_true", help=SUDO_HELP)

    exp = command(
        "export", "write a recording as speedscope, Chrome trace (Perfetto) or snapshot JSON"
    )
    exp.add_argument("file", help="a file written by `lifescope record` or `attach --record`")
    exp.add_argument(
        "--format",
        choices=("speedscope", "chrome", "snapshot"),
        default="speedscope",
        help="speedscope (speedscope.app), chrome (ui.perfetto.dev, chrome://tracing) or "
        "snapshot (lifescope.snapshot/1); default speedscope",
    )
    exp.add_argument("--at", type=float, default=None, metavar="T",
                     help="end of the exported window, seconds from the recording's start "
                     "(default: its end)")  # fmt: skip
    CollectorOptions.add_arguments(exp, ("seconds", "force"))
    exp.add_argument("-o", "--output", required=True, metavar="FILE",
                     help="the file to write (created 0600; - for stdout)")  # fmt: skip

    replay = command("replay", "open the UI on a recording")
    replay.add_argument("file", help="a file written by `lifescope record` or `attach --record`")
    replay.add_argument("--speed", type=float, default=1.0, help="0.25–8 (default 1)")

    demo = command("demo", "start the bundled demo server and load, and watch them")
    demo.add_argument("--rate", type=float, default=40.0, help="load requests per second")
    demo.add_argument("--concurrency", type=int, default=8, help="load concurrency cap")
    demo.add_argument("--duration", type=float, default=3600.0, help="load duration cap (s)")
    demo.add_argument("--gil-hog", action="store_true", help="run a GIL-hogging thread")
    demo.add_argument(
        "--slow-middleware",
        type=float,
        default=0.0,
        metavar="MS",
        help="add a middleware that awaits MS milliseconds",
    )
    demo.add_argument(
        "--mix",
        default="fast=6,db=3,sleep=2,cpu=1,bigjson=1",
        help="route weights for the load generator",
    )
    demo.add_argument(
        "--web",
        metavar="PORT",
        type=int,
        nargs="?",
        const=8000,
        default=None,
        help="serve the UI to a browser on localhost:PORT (default 8000) via textual-serve",
    )

    doctor = command("doctor", "check permissions and tools, with remedies")
    doctor.add_argument("pid", nargs="?", help="also check this process (or ssh://host/PID: "
                        "check that host)")  # fmt: skip
    doctor.add_argument("--sudo", action="store_true", help=SUDO_HELP)
    return parser, subs


def _target_or_exit(text: str, command: str) -> Target:
    try:
        return resolve(parse_pid(text, command))
    except TargetError as exc:
        print(exc.line(), file=sys.stderr)
        raise SystemExit(exc.exit_code) from None


def _remote_or_none(text: str | None, args: argparse.Namespace) -> RemoteTarget | None:
    """The `ssh://` target named, or None for a local pid; exits 2 on a malformed one."""
    from lifescope.remote import spec

    if not spec.is_remote(text):
        if getattr(args, "sudo", False):
            print("lifescope: --sudo is for ssh:// targets — run lifescope itself with sudo "
                  "for a local one", file=sys.stderr)  # fmt: skip
            raise SystemExit(2)
        return None
    try:
        return spec.parse(text)  # type: ignore[arg-type]
    except spec.SpecError as exc:
        print(f"lifescope: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _load_recording(path: str) -> Recording:
    from lifescope.recording import RecordingError, load

    try:
        recording = load(path)
    except RecordingError as exc:
        print(f"lifescope: {exc} — pass a file written by `lifescope record`", file=sys.stderr)
        raise SystemExit(1) from None
    if recording.problem:
        print(
            f"lifescope: {path}: {recording.problem}; using everything before it", file=sys.stderr
        )
    return recording


def cmd_snapshot(args: argparse.Namespace) -> int:
    from lifescope.analysis import report
    from lifescope.session import CollectorFailed, gather

    if args.source is not None:
        from lifescope.replay import Player

        if args.pid is not None:
            print("lifescope: give a pid or --from FILE, not both — drop one", file=sys.stderr)
            return 2
        player = Player(_load_recording(args.source))
        length = player.end - player.start
        if args.at is not None and not 0 < args.at <= length:
            print(f"lifescope: --at {args.at:g} is outside {args.source}, which is "
                  f"{length:.1f} s long — pick 0 < T ≤ {length:.1f}", file=sys.stderr)  # fmt: skip
            return 2
        end = player.end if args.at is None else player.start + args.at
        player.seek(end)
        window = player.timeline.window(args.seconds, end=player.position)
    else:
        if args.pid is None:
            print(
                "lifescope: snapshot needs a pid or --from FILE — e.g. snapshot 1234",
                file=sys.stderr,
            )
            return 2
        if args.at is not None:
            print("lifescope: --at needs --from FILE", file=sys.stderr)
            return 2
        remote = _remote_or_none(args.pid, args)
        # The report goes to -o; the collector's stream only to us.
        options = CollectorOptions.from_namespace(
            args, output=None, force=False, seconds=args.seconds or 3.0
        )
        try:
            if remote is not None:
                from lifescope.remote import link

                outputs.check(args.output or outputs.STDOUT, args.force)
                timeline = link.gather(remote, options, sudo=args.sudo)
            else:
                target = _target_or_exit(args.pid, "snapshot")
                outputs.check(args.output or outputs.STDOUT, args.force)  # refuse before sampling
                timeline = gather(target.pid, options)
        except (CollectorFailed, outputs.OutputError) as exc:
            print(f"lifescope: {exc}", file=sys.stderr)
            return 1
        window = timeline.window()
    result = report.build(window)
    text = json.dumps(report.to_json(result), indent=2) if args.json else report.to_text(result)
    try:
        with outputs.open_atomic(args.output or outputs.STDOUT, args.force) as out:
            out.write(text.encode() + b"\n")
    except outputs.OutputError as exc:
        print(f"lifescope: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_attach(args: argparse.Namespace) -> int:
    from lifescope import lifecycle
    from lifescope.ui.app import LifescopeApp

    lifecycle.arm_parent_death()  # served by `demo --web`: end with the server that started us
    remote = _remote_or_none(args.pid, args)
    target = _target_or_exit(args.pid, "attach") if remote is None else None
    privsep.separate()  # under sudo: from here on the UI (and its ssh) is the invoking user
    options = CollectorOptions.from_namespace(args)
    if options.record is not None:
        try:
            outputs.check(options.record, options.force)  # refuse before the screen changes
        except outputs.OutputError as exc:
            print(f"lifescope: {exc}", file=sys.stderr)
            return 1
    if remote is not None:
        from lifescope.remote.link import RemoteSession

        try:
            session = RemoteSession(remote, options, sudo=args.sudo)
        except outputs.OutputError as exc:
            print(f"lifescope: {exc}", file=sys.stderr)
            return 1
        app = LifescopeApp(remote.pid, options=options, remote=session)
        app.run()
        return app.return_code or 0
    assert target is not None
    if args.demo_stage is not None:
        from lifescope.ui.stage import Endpoint, Stage

        url, server_control, load_control = args.demo_stage
        stage = Stage(Endpoint(server_control), Endpoint(load_control))
        app = LifescopeApp(target.pid, title_hint=f"demo server on {url}", stage=stage)
    else:
        app = LifescopeApp(target.pid, options=options)
    app.run()
    return app.return_code or 0


def cmd_record(args: argparse.Namespace) -> int:
    from lifescope import collector

    if args.output is None and args.prometheus is None:
        print(
            "lifescope: record needs -o FILE or --prometheus HOST:PORT — e.g. -o session.lsr",
            file=sys.stderr,
        )
        return 2
    remote = _remote_or_none(args.pid, args)
    if remote is not None:
        return _record_remote(remote, args)
    target = _target_or_exit(args.pid, "record")
    started = time.monotonic()
    # Nobody watches a recording to a file live: longer py-spy runs, same 1 s windows.
    live = args.output in (None, outputs.STDOUT) or args.prometheus is not None
    overrides = {} if live else {"stacks_run": RECORD_STACKS_RUN}
    code = collector.run(target, CollectorOptions.from_namespace(args, **overrides))
    if code == 0 and args.output not in (None, outputs.STDOUT):
        size = os.path.getsize(args.output)
        print(f"lifescope: recorded {time.monotonic() - started:.1f} s of pid {target.pid} to "
              f"{args.output} ({size:,} bytes)", file=sys.stderr)  # fmt: skip
    return code


def _record_remote(remote: RemoteTarget, args: argparse.Namespace) -> int:
    """`record ssh://host/PID -o FILE`: the host streams, the recording is written here."""
    from lifescope.remote.link import RemoteSession
    from lifescope.session import CollectorFailed

    if args.prometheus is not None or args.output in (None, outputs.STDOUT):
        print("lifescope: record ssh://... needs -o FILE (a local recording); --prometheus "
              "serves from the machine it runs on — run lifescope there",
              file=sys.stderr)  # fmt: skip
        return 2
    options = CollectorOptions.from_namespace(args, output=None, record=args.output)
    started = time.monotonic()
    try:
        session = RemoteSession(remote, options, sudo=args.sudo)
    except outputs.OutputError as exc:
        print(f"lifescope: {exc}", file=sys.stderr)
        return 1
    gaps = 0
    try:
        for sample in session.samples():
            if type(sample).__name__ == "LinkGap" and getattr(sample, "ongoing", False):
                gaps += 1
                reason = getattr(sample, "reason", "")
                print(f"lifescope: link to {remote.host} down ({reason}); reconnecting, the "
                      "gap is marked in the recording", file=sys.stderr)  # fmt: skip
    except CollectorFailed as exc:
        print(f"lifescope: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        session.stop()
    size = os.path.getsize(args.output)
    print(f"lifescope: recorded {time.monotonic() - started:.1f} s of {remote} to {args.output} "
          f"({size:,} bytes, {gaps} link outage(s))", file=sys.stderr)  # fmt: skip
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from lifescope import export

    recording = _load_recording(args.file)
    length = recording.end - recording.start
    if args.at is not None and not 0 < args.at <= length:
        print(f"lifescope: --at {args.at:g} is outside {args.file}, which is {length:.1f} s "
              f"long — pick 0 < T ≤ {length:.1f}", file=sys.stderr)  # fmt: skip
        return 2
    end = None if args.at is None else recording.start + args.at
    start = None
    if args.seconds is not None:
        start = (recording.end if end is None else end) - args.seconds
    try:
        size = export.write(args.output, args.format, recording, start=start, end=end,
                            force=args.force)  # fmt: skip
    except outputs.OutputError as exc:
        print(f"lifescope: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"lifescope: cannot write {args.output}: {exc.strerror} — choose a writable path",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"lifescope: wrote {args.output} ({args.format}, {size:,} bytes)", file=sys.stderr)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from lifescope.replay import SPEEDS, Player
    from lifescope.ui.app import LifescopeApp

    if not SPEEDS[0] <= args.speed <= SPEEDS[-1]:
        print("lifescope: --speed must be between 0.25 and 8", file=sys.stderr)
        return 2
    privsep.separate()  # under sudo, a recording is parsed and shown as the invoking user
    player = Player(_load_recording(args.file))
    player.speed = args.speed
    app = LifescopeApp(player=player, title_hint=f"replay of {args.file}")
    app.run()
    return app.return_code or 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lifescope.demo.children import start_demo_server, start_load
    from lifescope.ui.app import LifescopeApp

    privsep.separate()  # under sudo: the UI, demo server and load run as the invoking user
    flags: list[str] = []
    if args.gil_hog:
        flags.append("--gil-hog")
    if args.slow_middleware:
        flags += ["--slow-middleware", str(args.slow_middleware)]
    server = start_demo_server(port=0, flags=flags)
    load = None
    try:
        load = start_load(
            server.url,
            rate=args.rate,
            concurrency=args.concurrency,
            duration=args.duration,
            mix=args.mix,
        )
        if args.web is not None:
            stage = (server.url, server.control_url, load.control_url)
            return _serve_web(server.pid, args.web, stage)
        from lifescope.ui.stage import Stage

        app = LifescopeApp(
            server.pid, title_hint=f"demo server on {server.url}", stage=Stage(server, load)
        )
        app.run()
        return app.return_code or 0
    finally:
        if load is not None:
            load.stop()
        server.stop()


def _serve_web(pid: int, port: int, stage: tuple[str, str, str]) -> int:
    """The same app in a browser: textual-serve runs, per visitor, `lifescope attach PID` with
    the demo's stage (its keys reach this demo's server and load through their control URLs).

    Bound to localhost only: the page drives a tool that reads another process's memory.
    """
    try:
        from textual_serve.server import Server
    except ImportError:
        print(
            "lifescope: --web needs textual-serve — pip install 'lifescope[web]'", file=sys.stderr
        )
        return 1
    from lifescope import lifecycle

    # Each visitor's `attach` is our direct child (`exec` replaces the shell textual-serve puts
    # in between) and dies with us, even when we are killed; it stops its own collector.
    os.environ[lifecycle.PARENT_PID_ENV] = str(os.getpid())
    command = (
        f"exec {shlex.quote(sys.executable)} -m lifescope attach {pid} "
        f"--demo-stage {' '.join(shlex.quote(part) for part in stage)}"
    )

    class WebServer(Server):
        def request_exit(self) -> None:
            # textual-serve alone waits for every open browser tab to leave (up to a minute):
            # end the visitors' processes first, so their websockets close and it can stop.
            if not lifecycle.begin_exit(0):
                os._exit(130)
            super().request_exit()

    server = WebServer(command, host="localhost", port=port, title="lifescope demo")
    # serve() takes SIGINT and SIGTERM; a closed terminal's SIGHUP must end us the same way.
    lifecycle.exit_on_signals(lambda _code: server.request_exit())
    print(f"lifescope: open http://localhost:{port} (Ctrl+C to stop)", file=sys.stderr)
    server.serve()
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from lifescope import doctor

    remote = _remote_or_none(args.pid, args)
    if remote is not None:
        from lifescope.remote import doctor as remote_doctor

        checks = remote_doctor.run(remote, sudo=args.sudo)
        for check in checks:
            print(check.line())
        return 0 if all(c.ok for c in checks if c.name not in remote_doctor.OPTIONAL) else 1
    pid = None
    if args.pid is not None:
        try:
            pid = parse_pid(args.pid, "doctor")
        except TargetError as exc:
            print(exc.line(), file=sys.stderr)
            return exc.exit_code
    checks = doctor.run(pid)
    for check in checks:
        print(check.line())
    return 0 if all(c.ok for c in checks if c.name != "raw socket") else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser, subs = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # say it with the subcommand's usage, not the top level's
        (subs.get(args.command) or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    commands = {
        "attach": cmd_attach,
        "snapshot": cmd_snapshot,
        "record": cmd_record,
        "export": cmd_export,
        "replay": cmd_replay,
        "demo": cmd_demo,
        "doctor": cmd_doctor,
    }
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `lifescope snapshot PID | head`: the reader left; that is not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
