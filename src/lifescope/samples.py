"""The samples probes emit: the only things that cross from the collector to the UI.

They are frozen, slotted and built from tuples so a sample can be shared between threads,
kept in ring buffers and replayed without anyone mutating it. Every sample carries `t`, the
collector's `time.monotonic()` when the observation was made; the stream header maps that
clock to wall time once, so samples stay small.

Field names are part of the stream format (see `stream.py`): add fields with defaults at the
end, never rename — old recordings must still decode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union, get_args

STATUSES = ("ok", "degraded", "denied", "unavailable", "gone")


@dataclass(frozen=True, slots=True)
class Hello:
    """First record of every stream: who is watched, and how to read the clock."""

    schema: str
    pid: int
    start_ticks: int
    command: str
    python: str | None
    executable: str
    mono_at_start: float
    wall_at_start: float
    collector_pid: int
    clock_ticks: int
    """Kernel clock ticks per second (`SC_CLK_TCK`), for CPU times read from /proc."""
    lifescope_version: str = ""
    workers: tuple[int, ...] = ()
    """Python child processes at attach time (pre-fork servers: gunicorn, uvicorn)."""


HEALTHY = frozenset({"ok", "standby"})
"""Statuses of a probe that works: `standby` is a fallback not needed while others cover it."""


@dataclass(frozen=True, slots=True)
class ProbeStatus:
    """A probe's health. Sent on change, so the UI can grey a pane out with the reason."""

    t: float
    probe: str
    status: str
    reason: str | None = None
    remedy: str | None = None


@dataclass(frozen=True, slots=True)
class ThreadStat:
    tid: int
    name: str
    state: str
    """Kernel scheduler state letter: R running, S sleeping, D disk wait, T stopped, Z zombie."""
    cpu_ticks: int
    syscall: int | None
    """Syscall number the thread is blocked in; -1 when running user code; None if unreadable."""
    arg0: int | None
    """First syscall argument — the fd for read/recvfrom/sendto, the address for futex."""
    pid: int | None = None
    """The process of this thread when it is not the attached one: a pre-fork master's
    worker (`probes/family.py`)."""


@dataclass(frozen=True, slots=True)
class ThreadsSample:
    t: float
    threads: tuple[ThreadStat, ...]


@dataclass(frozen=True, slots=True)
class Frame:
    name: str
    file: str
    line: int
    code: str | None = None
    """The source line, for frames that were innermost in a sample: when a thread sits in a
    C function (sqlite3's execute, time.sleep) py-spy shows only its Python caller, and the
    line `cur.execute(...)` is what tells a database wait from a sleep."""
    calls_next: bool = False
    """An application function that calls the next handler of a chain: middleware."""


@dataclass(frozen=True, slots=True)
class StackSpan:
    """A run of identical stack samples of one thread between `start` and `end`.

    py-spy samples at a fixed rate; identical consecutive stacks collapse into one span, so a
    thread parked in the same frame for a second costs one record, not a hundred.
    """

    tid: int
    start: float
    end: float
    stack: tuple[int, ...]
    """Indices into the window's frame table, innermost frame first."""


@dataclass(frozen=True, slots=True)
class StacksWindow:
    """One py-spy recording window: every thread's stack over time, idle threads included."""

    t: float
    start: float
    frames: tuple[Frame, ...]
    spans: tuple[StackSpan, ...]
    thread_names: tuple[tuple[int, str], ...]
    samples: int
    """Stack traces py-spy reported taking in the window, summed over threads."""
    errors: int
    rate_hz: float
    pids: tuple[tuple[int, int], ...] = ()
    """(tid, pid) of every thread of a process other than the attached one (py-spy
    `--subprocesses` on a pre-fork master)."""
    sampled_to: float | None = None
    """The newest sample the window shows (py-spy's windows; None: sampled up to `t`). py-spy
    closes its open slices when it writes its file, after its last sample (by one interval,
    and by up to ~0.2 s more under load), and the file shows a sample only where a stack
    changed: past this moment a stack is py-spy's last one, and a thread born there was
    never looked at (see `lifetimes.clip`)."""


@dataclass(frozen=True, slots=True)
class GilOwnership:
    """GIL owner per thread from a `py-spy dump` — the fallback source of GIL share."""

    t: float
    owners: tuple[int, ...]
    """OS thread ids that held the GIL at this instant (0 or 1 in practice)."""
    active: tuple[int, ...]
    threads: tuple[tuple[int, str], ...]
    top_frames: tuple[tuple[int, str], ...] = ()
    """(tid, innermost frame) for every thread, idle ones too: "what is each doing now"."""


@dataclass(frozen=True, slots=True)
class GilInfo:
    """Sent once when lifescope's own GIL reader attached and validated the layout."""

    t: float
    python: str
    interval_us: int
    cond_address: int
    cond_size: int
    mutex_address: int
    mutex_size: int
    tid_source: str
    rate_hz: float
    realtime: bool = False
    """True when the sampling thread got SCHED_FIFO (reads on time even on busy CPUs)."""


FREE = 0
"""`GilRuns` holder value for "the GIL was free"."""
UNKNOWN_HOLDER = -1
"""Holder value for "held, by a thread state we could not map to a thread id"."""
NO_GIL = "no GIL"
"""How the GIL probe's status reason starts when the target has no GIL (a free-threaded build
with the GIL disabled): the analysis then shows no held share at all, not py-spy's."""


@dataclass(frozen=True, slots=True)
class GilRuns:
    """Run-length GIL history: who held it from when to when, between two emissions.

    The probe reads the GIL at ~2 kHz but sends runs, not reads: two CPU-bound threads make
    ~185 hand-overs a second, an idle server almost none, so runs are 10-1000× smaller than
    raw reads and lose nothing the analysis uses (hold durations, shares, switch rate).
    """

    t: float
    start: float
    runs: tuple[tuple[float, float, int], ...]
    """(start, end, holder tid | FREE | UNKNOWN_HOLDER) of every run that ended."""
    current: tuple[float, int]
    """(start, holder) of the run still going on at `t`."""
    reads: int
    switches: int
    """Increase of the interpreter's `switch_number` over [start, t]."""
    late: int = 0
    """Reads that came over 1 ms after the previous one (the sampler lacked CPU)."""


@dataclass(frozen=True, slots=True)
class Socket:
    fd: int | None
    """The target's fd for this socket; None for sockets on its ports it does not own yet."""
    state: str
    local: str
    peer: str
    recv_q: int
    send_q: int
    inode: int
    rtt_us: int | None = None
    retransmits: int | None = None
    last_data_recv_ms: int | None = None
    last_data_sent_ms: int | None = None
    bytes_received: int | None = None
    bytes_acked: int | None = None
    drops: int | None = None
    """A listener's own count of connections turned away (`sk_drops`; `ss -ltm`'s `d`)."""
    pid: int | None = None
    """The process whose `fd` this is, when it is not the attached one (a worker)."""
    notsent_bytes: int | None = None
    """Of `send_q`, the bytes the kernel has not sent yet (tcp_info; None from /proc/net): the
    rest is on its way or waits for the peer's ACK."""


@dataclass(frozen=True, slots=True)
class SocketsSample:
    t: float
    sockets: tuple[Socket, ...]
    fds: int
    fd_limit: int | None
    listen_overflows: int | None = None
    listen_drops: int | None = None
    source: str = "procfs"


@dataclass(frozen=True, slots=True)
class PacketEvent:
    """One packet that passed the kernel filter: a handshake, a close, or a first payload.

    Payload bytes are never kept. `line` holds the first line of an HTTP/1.x request or
    response only when the user opted in with `--http-lines`; TLS ClientHello is marked as
    such in `kind`, never decoded.
    """

    t: float
    """Kernel receive timestamp, on the collector's monotonic clock."""
    kind: str
    """SYN, SYNACK, ACK (the handshake's last), FIN, RST, DATA, TLS_HELLO."""
    src: str
    dst: str
    seq: int
    ack: int
    length: int
    """TCP payload length in bytes (the count only)."""
    line: str | None = None


@dataclass(frozen=True, slots=True)
class PacketsSample:
    t: float
    events: tuple[PacketEvent, ...]
    captured: int
    """Packets the kernel handed us since the previous sample (after the BPF filter)."""
    kernel_dropped: int
    """Packets the kernel dropped for us since the previous sample (PACKET_STATISTICS)."""
    ports: tuple[int, ...] = ()
    """The target's listening ports the filter was built for."""
    events_suppressed: int = 0
    """Events counted but not sent because the per-sample budget was spent (a flood)."""


@dataclass(frozen=True, slots=True)
class TaskAwait:
    """One frame of a suspended coroutine chain, outermost (the task's coroutine) first."""

    name: str
    file: str
    line: int
    code: str | None = None
    """The source line, for the application's own frames."""
    calls_next: bool = False
    """An application function that calls the next handler of a chain: middleware."""


@dataclass(frozen=True, slots=True)
class TaskInfo:
    address: int
    """Address of the Task object: stable for the task's life, a key for the UI."""
    name: str
    state: str
    """pending, running, done, cancelled."""
    chain: tuple[TaskAwait, ...]
    awaiting: str | None
    """What the innermost coroutine waits on: "future", "sleep", "task:NAME", "lock", ..."""
    awaited_by: int | None = None
    """Address of the task that awaits this one, when known."""
    pid: int | None = None
    """The process of this task when it is not the attached one (a pre-fork worker)."""


@dataclass(frozen=True, slots=True)
class TasksSample:
    t: float
    loop_tid: int | None
    tasks: tuple[TaskInfo, ...]
    total: int
    """Live tasks found; more than len(tasks) when the per-pass cap cut the walk short."""
    read_ms: float
    """Wall time of the pass, so the UI can show what reading tasks costs."""
    errors: int = 0
    """Objects that changed under us and were skipped (torn reads)."""


@dataclass(frozen=True, slots=True)
class CollectorCost:
    """The collector's own footprint, so the header can say what watching costs."""

    t: float
    cpu_s: float
    """CPU seconds used by the collector and its py-spy children since start."""
    rss_bytes: int
    samples: tuple[tuple[str, int], ...]
    errors: tuple[tuple[str, int], ...]
    dropped: int = 0
    """Samples dropped because the reader of the stream fell behind (bounded queue)."""
    rate_scale: float = 1.0
    """Below 1 while the machine is saturated and the probes shed load (`probes/budget.py`)."""
    machine_idle: float | None = None
    """The machine's idle share (all CPUs) over the last second, as the budget saw it."""
    target_cpu_wait: float | None = None
    """The target's threads' run-queue wait over the last second, in cores (schedstat)."""
    lean: bool = False
    """`--lean`: the rates are a quarter by choice (a thin link), not because of the machine."""


@dataclass(frozen=True, slots=True)
class TargetGone:
    t: float
    reason: str


@dataclass(frozen=True, slots=True)
class ProcessStat:
    """One process of a pre-fork server (the attached master or one of its workers)."""

    pid: int
    role: str
    """"main" (the process attached to), "worker", or a helper that serves no request:
    "resource-tracker", "forkserver", "router" (`probes/family.py`)."""
    cpu_ticks: int
    """utime + stime of all its threads, in clock ticks."""
    rss_bytes: int
    threads: int
    fds: int
    connections: int
    """ESTABLISHED TCP sockets whose inode is one of its fds."""
    busy: int
    """... of which have unread request bytes or unacknowledged response bytes queued."""


@dataclass(frozen=True, slots=True)
class ProcessesSample:
    """The master and its Python workers, once a second: who holds the server's load."""

    t: float
    processes: tuple[ProcessStat, ...]


@dataclass(frozen=True, slots=True)
class LinkGap:
    """The link to a remote collector (`attach ssh://host/PID`) was down: nothing was observed
    between `start` and `t`.

    Written by the UI side, not the collector: the collector on the host died with its
    session, so only the side that saw the link drop can say so. Sent twice per drop: once
    when it is seen (`ongoing`, `t` == `start`, so the UI can say "link down since ..." and a
    recording cut during the outage still says so), and again when a new collector streams
    (`t` is then the new collector's start). Times are the host's monotonic clock, which a
    reconnected collector on the same host shares, so the timeline stays one timeline.
    """

    t: float
    start: float
    """The last sample received before the drop (host clock)."""
    wall_start: float
    """When the drop was seen, local wall-clock time (what the UI prints)."""
    reason: str
    ongoing: bool = False


Sample = Union[  # noqa: UP007 -- evaluated at import, and the collector runs on 3.8 (below)
    Hello,
    ProbeStatus,
    ThreadsSample,
    StacksWindow,
    GilOwnership,
    GilInfo,
    GilRuns,
    SocketsSample,
    PacketsSample,
    TasksSample,
    CollectorCost,
    TargetGone,
    ProcessesSample,
    LinkGap,
]
"""Every record of the stream. A union, not `object`, so the type checker finds the place
that forgets a kind (`Timeline.add` ends in `assert_never`). `Union`, not `|`: this module
also runs in the collector on a host's 3.8 (`remote/compat.py`)."""

SAMPLE_TYPES: tuple[type, ...] = get_args(Sample)


@dataclass(frozen=True)
class SampleKind:
    """A kind of sample the timeline keeps a history of, and the probe that sends it.

    The one table of such kinds: the timeline's ring buffers, the `Window` it cuts, the
    report's probe list and the probe names `--probes` takes are all read from it.
    """

    cls: type
    field: str
    """Its name in `Window` (and the timeline's buffer)."""
    probe: str | None
    """The probe that emits it, as `--probes` and the report name it; None: the collector's
    own (its cost)."""
    keep: int
    """Its ring buffer holds the timeline's `maxlen // keep` samples: fewer of the large ones."""
    observations: str | None = None
    """The field that counts the observations one sample aggregates (GIL reads, py-spy
    traces, packets), for the probe's sample count; None: the sample is one."""
    spans: bool = False
    """The sample covers `start`..`t` (a run or a window), not the instant `t`."""


KINDS: tuple[SampleKind, ...] = (
    SampleKind(GilRuns, "gil_runs", "gil", 10, observations="reads", spans=True),
    SampleKind(ThreadsSample, "threads", "threads", 1),
    SampleKind(StacksWindow, "stacks", "stacks", 100, observations="samples", spans=True),
    SampleKind(GilOwnership, "dumps", "dump", 10),
    SampleKind(SocketsSample, "sockets", "sockets", 10),
    SampleKind(PacketsSample, "packets", "packets", 10, observations="captured"),
    SampleKind(TasksSample, "tasks", "tasks", 100),
    SampleKind(ProcessesSample, "processes", "workers", 100),
    SampleKind(CollectorCost, "costs", None, 10),
)

PROBES: tuple[str, ...] = tuple(k.probe for k in KINDS if k.probe is not None)
"""Every probe, in the order the report lists them."""
