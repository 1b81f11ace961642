"""Parsers of external text never crash on garbage: /proc files, py-spy output, streams."""

from __future__ import annotations

import io

from hypothesis import given, settings
from hypothesis import strategies as st

from lifescope import stream
from lifescope.probes.pyspy import classify_failure, parse_dump
from lifescope.probes.threads import parse_stat, parse_syscall


@given(st.binary(max_size=300))
def test_syscall_parser_never_raises_unexpectedly(raw: bytes) -> None:
    try:
        number, arg0 = parse_syscall(raw)
    except ValueError:
        return  # garbage is rejected, loudly and specifically
    assert number is None or isinstance(number, int)
    assert arg0 is None or isinstance(arg0, int)


@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40),
    st.sampled_from("RSDTZXI"),
    st.integers(0, 2**40),
    st.integers(0, 2**40),
)
def test_stat_parser_handles_any_comm(comm: str, state: str, utime: int, stime: int) -> None:
    fields = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", str(utime), str(stime)]
    raw = f"123 ({comm}) {state} " + " ".join(fields[:10]) + f" {utime} {stime} 0 0"
    parsed_comm, parsed_state, ticks = parse_stat(raw.encode())
    assert parsed_comm == comm
    assert parsed_state == state
    assert ticks == utime + stime


@settings(max_examples=200)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(
                ["os_thread_id", "thread_name", "owns_gil", "active", "frames", "thread_id"]
            ),
            st.one_of(
                st.none(),
                st.integers(),
                st.text(max_size=5),
                st.booleans(),
                st.lists(
                    st.dictionaries(
                        st.sampled_from(["name", "filename", "line"]),
                        st.one_of(st.text(max_size=5), st.integers(0, 9)),
                        max_size=3,
                    ),
                    max_size=3,
                ),
            ),
        ),
        max_size=5,
    )
)
def test_dump_parser_survives_malformed_json(threads: list[dict]) -> None:
    try:
        sample = parse_dump(threads, 1.0)
    except (TypeError, ValueError, AttributeError):
        return
    assert len(sample.threads) == len(threads)


@given(st.text(max_size=200), st.integers(1, 10**6))
def test_failure_classifier_always_answers(stderr: str, pid: int) -> None:
    status, reason, remedy = classify_failure(stderr, pid)
    assert status in ("denied", "gone", "degraded") and reason and remedy


@given(st.binary(max_size=400))
def test_stream_reader_rejects_garbage_with_an_offset(data: bytes) -> None:
    try:
        list(stream.read(io.BytesIO(stream.header_line() + data)))
    except stream.StreamError as exc:
        assert exc.offset >= len(stream.header_line())
