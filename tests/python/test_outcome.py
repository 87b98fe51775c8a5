"""Conversion of protobuf `Outcome` messages into outcome objects."""

from __future__ import annotations

import dataclasses
import os

import pandas as pd
import pyarrow as pa
import pytest

import pyclave
from fake_supervisor import table_memfd
from pyclave import (
    Killed,
    Ok,
    OutOfMemory,
    OutputRejected,
    ProtocolError,
    Rejected,
    Timeout,
    Usage,
    UserError,
    outcome_from_proto,
)
from pyclave._proto import api_pb2


def with_common(**kind: object) -> api_pb2.Outcome:
    return api_pb2.Outcome(
        stdout=api_pb2.CapturedOutput(data=b"out\x00\xff", truncated=True),
        stderr=api_pb2.CapturedOutput(data=b"err", truncated=False),
        usage=api_pb2.Usage(
            queue_time_us=11, wall_time_us=22, cpu_time_us=33, peak_memory_bytes=44
        ),
        **kind,
    )


def assert_common(outcome: pyclave.Outcome) -> None:
    assert outcome.stdout == b"out\x00\xff"
    assert outcome.stdout_truncated is True
    assert outcome.stderr == b"err"
    assert outcome.stderr_truncated is False
    assert outcome.usage == Usage(
        queue_time_us=11, wall_time_us=22, cpu_time_us=33, peak_memory_bytes=44
    )


def fd_is_closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def test_ok_with_json_value() -> None:
    outcome = outcome_from_proto(with_common(ok=api_pb2.Ok(json='{"a": [1, 2.5, null]}')))
    assert isinstance(outcome, Ok)
    assert outcome.ok is True
    assert outcome.kind == "ok"
    assert outcome.value == {"a": [1, 2.5, None]}
    assert outcome.json == '{"a": [1, 2.5, null]}'
    assert outcome.table is None
    assert_common(outcome)


def test_ok_without_anything() -> None:
    outcome = outcome_from_proto(api_pb2.Outcome(ok=api_pb2.Ok()))
    assert isinstance(outcome, Ok)
    assert outcome.value is None
    assert outcome.json == ""
    assert outcome.stdout == b""
    assert outcome.usage == Usage()


def test_ok_with_table_reads_and_closes_the_fd() -> None:
    expected = pd.DataFrame({"x": [1, 2, 3], "s": ["a", None, "ç"]})
    fd = table_memfd(pa.Table.from_pandas(expected, preserve_index=False))
    message = with_common(ok=api_pb2.Ok(has_table=True, json="7"))
    outcome = outcome_from_proto(message, fd)
    assert isinstance(outcome, Ok)
    assert fd_is_closed(fd)
    assert outcome.table is not None
    pd.testing.assert_frame_equal(outcome.table, expected)
    assert outcome.value == 7
    assert "3 rows x 2 columns" in repr(outcome)
    assert_common(outcome)


def test_ok_announcing_a_table_without_fd_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="no file descriptor"):
        outcome_from_proto(api_pb2.Outcome(ok=api_pb2.Ok(has_table=True)))


@pytest.mark.parametrize(
    "message",
    [
        api_pb2.Outcome(ok=api_pb2.Ok(json="1")),
        api_pb2.Outcome(rejected=api_pb2.Rejected(reason="no")),
    ],
)
def test_an_unannounced_fd_is_a_protocol_error_and_is_closed(message: api_pb2.Outcome) -> None:
    fd = os.memfd_create("stray")
    with pytest.raises(ProtocolError):
        outcome_from_proto(message, fd)
    assert fd_is_closed(fd)


def test_a_bad_table_file_is_a_protocol_error_and_the_fd_is_closed() -> None:
    fd = os.memfd_create("garbage")
    os.write(fd, b"this is not arrow")
    with pytest.raises(ProtocolError, match="Arrow IPC"):
        outcome_from_proto(api_pb2.Outcome(ok=api_pb2.Ok(has_table=True)), fd)
    assert fd_is_closed(fd)


def test_ok_with_invalid_json_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="JSON"):
        outcome_from_proto(api_pb2.Outcome(ok=api_pb2.Ok(json="{nope")))


def test_user_error() -> None:
    message = with_common(
        user_error=api_pb2.UserError(
            type="pandas.errors.ParserError", message="bad csv", traceback="Traceback ...\n"
        )
    )
    outcome = outcome_from_proto(message)
    assert outcome == UserError(
        type="pandas.errors.ParserError",
        message="bad csv",
        traceback="Traceback ...\n",
        stdout=b"out\x00\xff",
        stdout_truncated=True,
        stderr=b"err",
        usage=Usage(queue_time_us=11, wall_time_us=22, cpu_time_us=33, peak_memory_bytes=44),
    )
    assert outcome.ok is False
    assert outcome.kind == "user_error"


@pytest.mark.parametrize(
    ("clock", "name"),
    [
        (api_pb2.Timeout.CLOCK_WALL, "wall"),
        (api_pb2.Timeout.CLOCK_CPU, "cpu"),
        (api_pb2.Timeout.CLOCK_UNSPECIFIED, "unspecified"),
    ],
)
def test_timeout(clock: int, name: str) -> None:
    outcome = outcome_from_proto(with_common(timeout=api_pb2.Timeout(clock=clock, limit_ms=1500)))
    assert isinstance(outcome, Timeout)
    assert (outcome.clock, outcome.limit_ms) == (name, 1500)
    assert outcome.kind == "timeout"
    assert not outcome.ok
    assert_common(outcome)


def test_out_of_memory() -> None:
    message = with_common(out_of_memory=api_pb2.OutOfMemory(limit_bytes=1 << 30, peak_bytes=2**31))
    outcome = outcome_from_proto(message)
    assert isinstance(outcome, OutOfMemory)
    assert (outcome.limit_bytes, outcome.peak_bytes) == (1 << 30, 2**31)
    assert outcome.kind == "out_of_memory"
    assert_common(outcome)


def test_killed() -> None:
    message = with_common(killed=api_pb2.Killed(signal=11, signal_name="SIGSEGV"))
    outcome = outcome_from_proto(message)
    assert isinstance(outcome, Killed)
    assert (outcome.signal, outcome.signal_name) == (11, "SIGSEGV")
    assert outcome.kind == "killed"
    assert_common(outcome)


def test_killed_without_a_name_gets_one() -> None:
    outcome = outcome_from_proto(api_pb2.Outcome(killed=api_pb2.Killed(signal=31)))
    assert isinstance(outcome, Killed)
    assert outcome.signal_name == "SIGSYS"


def test_output_rejected() -> None:
    message = with_common(output_rejected=api_pb2.OutputRejected(reason="invalid UTF-8"))
    outcome = outcome_from_proto(message)
    assert isinstance(outcome, OutputRejected)
    assert outcome.reason == "invalid UTF-8"
    assert outcome.kind == "output_rejected"
    assert_common(outcome)


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (api_pb2.Rejected.CODE_UNSPECIFIED, "unspecified"),
        (api_pb2.Rejected.CODE_QUEUE_FULL, "queue_full"),
        (api_pb2.Rejected.CODE_CODE_TOO_LARGE, "code_too_large"),
        (api_pb2.Rejected.CODE_SCRIPT_NOT_FOUND, "script_not_found"),
        (api_pb2.Rejected.CODE_BAD_REQUEST, "bad_request"),
        (api_pb2.Rejected.CODE_LIMIT_TOO_HIGH, "limit_too_high"),
        (api_pb2.Rejected.CODE_BAD_INPUT_TABLE, "bad_input_table"),
        (api_pb2.Rejected.CODE_SHUTTING_DOWN, "shutting_down"),
        (api_pb2.Rejected.CODE_TOO_MANY_JOBS, "too_many_jobs"),
        (99, "unknown_99"),
    ],
)
def test_rejected(code: int, name: str) -> None:
    outcome = outcome_from_proto(with_common(rejected=api_pb2.Rejected(code=code, reason="why")))
    assert isinstance(outcome, Rejected)
    assert (outcome.code, outcome.reason) == (name, "why")
    assert outcome.kind == "rejected"
    assert_common(outcome)


def test_an_outcome_of_unknown_kind_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="kind"):
        outcome_from_proto(api_pb2.Outcome(stdout=api_pb2.CapturedOutput(data=b"x")))


def test_outcomes_are_frozen() -> None:
    outcome = outcome_from_proto(api_pb2.Outcome(user_error=api_pb2.UserError(type="E")))
    assert isinstance(outcome, UserError)
    with pytest.raises(dataclasses.FrozenInstanceError):
        outcome.message = "changed"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        outcome.usage.cpu_time_us = 1  # type: ignore[misc]


def test_outcomes_support_match() -> None:
    outcome = outcome_from_proto(api_pb2.Outcome(timeout=api_pb2.Timeout(clock=2, limit_ms=9)))
    match outcome:
        case Timeout(clock="cpu", limit_ms=limit):
            assert limit == 9
        case _:
            pytest.fail(f"did not match: {outcome!r}")


def test_every_kind_is_distinct() -> None:
    classes: list[type[pyclave.Outcome]] = [
        Ok,
        UserError,
        Timeout,
        OutOfMemory,
        Killed,
        OutputRejected,
        Rejected,
    ]
    assert [cls.kind for cls in classes] == [
        "ok",
        "user_error",
        "timeout",
        "out_of_memory",
        "killed",
        "output_rejected",
        "rejected",
    ]
