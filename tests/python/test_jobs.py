"""Request building, input tables in memfds, and response decoding."""

from __future__ import annotations

import fcntl
import json
import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pyclave import Limits, Ok, ProtocolError
from pyclave._jobs import PreparedJob, decode_reply, encode_request, prepare_job
from pyclave._proto import api_pb2
from pyclave._tables import read_table_fd


def prepare(**overrides: Any) -> PreparedJob:
    arguments: dict[str, Any] = {
        "kind": "auto",
        "code": "def main():\n    return 1\n",
        "script": None,
        "table": None,
        "params": None,
        "limits": Limits(),
    }
    arguments.update(overrides)
    return prepare_job(**arguments)


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": np.arange(1000, dtype=np.int64),
            "f": np.linspace(0, 1, 1000),
            "s": [f"row {i}" if i % 7 else None for i in range(1000)],
            "t": pd.date_range("2026-01-01", periods=1000, freq="min", tz="UTC"),
        }
    )


@pytest.fixture
def prepared_with(frame: pd.DataFrame) -> Iterator[PreparedJob]:
    job = prepare(kind="transform", table=frame)
    yield job
    job.close()


def read_memfd(fd: int) -> pa.Table:
    data = os.pread(fd, os.fstat(fd).st_size, 0)
    return pa.ipc.open_file(pa.py_buffer(data)).read_all()


def test_transform_job_fields() -> None:
    job = prepare(
        kind="transform",
        code="def transform(table, params):\n    return table\n",
        params={"k": 2, "name": "ü"},
        limits=Limits(memory_limit_bytes=1 << 28, wall_timeout_ms=1500, cpu_timeout_ms=900),
    ).job
    assert job.kind == api_pb2.JOB_KIND_TRANSFORM
    assert job.WhichOneof("code") == "inline_code"
    assert job.inline_code.startswith("def transform")
    assert json.loads(job.params_json) == {"k": 2, "name": "ü"}
    assert job.has_input_table is False
    assert job.limits == api_pb2.Limits(
        memory_limit_bytes=1 << 28, wall_timeout_ms=1500, cpu_timeout_ms=900
    )


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("auto", api_pb2.JOB_KIND_AUTO),
        ("transform", api_pb2.JOB_KIND_TRANSFORM),
        ("exec", api_pb2.JOB_KIND_EXEC),
    ],
)
def test_kinds(kind: str, value: int) -> None:
    assert prepare(kind=kind).job.kind == value


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="kind"):
        prepare(kind="eval")


def test_script_name() -> None:
    job = prepare(code=None, script="reports/daily.py").job
    assert job.WhichOneof("code") == "script_name"
    assert job.script_name == "reports/daily.py"


@pytest.mark.parametrize(("code", "script"), [(None, None), ("x = 1", "a.py")])
def test_exactly_one_of_code_and_script(code: str | None, script: str | None) -> None:
    with pytest.raises(TypeError, match="exactly one"):
        prepare(code=code, script=script)


def test_code_must_be_text() -> None:
    with pytest.raises(TypeError, match="str"):
        prepare(code=b"x = 1")


def test_params_default_to_empty() -> None:
    assert prepare(params=None).job.params_json == ""
    assert prepare(params={}).job.params_json == "{}"


@pytest.mark.parametrize("params", [[1, 2], "{}", 3])
def test_params_must_be_an_object(params: object) -> None:
    with pytest.raises(TypeError, match="mapping"):
        prepare(params=params)


def test_params_must_be_strict_json() -> None:
    with pytest.raises(ValueError, match="JSON"):
        prepare(params={"x": math.nan})
    with pytest.raises(TypeError):
        prepare(params={"x": object()})


def test_limits_default_to_zero_meaning_the_servers() -> None:
    assert prepare().job.limits == api_pb2.Limits()


def test_limits_validation() -> None:
    with pytest.raises(ValueError, match="between"):
        Limits(wall_timeout_ms=-1)
    with pytest.raises(ValueError, match="between"):
        Limits(memory_limit_bytes=2**64)
    with pytest.raises(TypeError):
        Limits(cpu_timeout_ms=True)
    with pytest.raises(TypeError):
        Limits(cpu_timeout_ms=1.5)  # type: ignore[arg-type]


def test_limits_updated_keeps_unset_values() -> None:
    defaults = Limits(memory_limit_bytes=100, wall_timeout_ms=200)
    assert defaults.updated(wall_timeout_ms=5, cpu_timeout_ms=None) == Limits(
        memory_limit_bytes=100, wall_timeout_ms=5
    )
    assert defaults.updated(memory_limit_bytes=0).memory_limit_bytes == 0


def test_dataframe_becomes_an_arrow_file_in_a_sealed_memfd(
    prepared_with: PreparedJob, frame: pd.DataFrame
) -> None:
    assert prepared_with.job.has_input_table is True
    fd = prepared_with.input_fd
    assert fd is not None
    assert prepared_with.fds == [fd]
    assert os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:pyclave-input")
    assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    assert seals & fcntl.F_SEAL_WRITE
    assert seals & fcntl.F_SEAL_GROW
    assert seals & fcntl.F_SEAL_SHRINK
    assert not seals & fcntl.F_SEAL_SEAL  # the receiver may add its own seals
    with pytest.raises(PermissionError):
        os.pwrite(fd, b"x", 0)

    with open(f"/proc/self/fd/{fd}", "rb") as file:
        assert file.read(6) == b"ARROW1"  # the IPC *file* format, not the stream format
    table = read_memfd(fd)
    assert table.column_names == ["x", "f", "s", "t"]  # the default index is dropped
    pd.testing.assert_frame_equal(table.to_pandas(), frame)


def test_close_closes_the_input_fd(prepared_with: PreparedJob) -> None:
    fd = prepared_with.input_fd
    assert fd is not None
    prepared_with.close()
    assert prepared_with.input_fd is None
    assert prepared_with.fds == []
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)
    prepared_with.close()  # idempotent


def test_a_meaningful_index_is_kept() -> None:
    frame = pd.DataFrame({"x": [1, 2, 3]}, index=pd.Index(["a", "b", "c"], name="key"))
    job = prepare(table=frame)
    try:
        assert job.input_fd is not None
        table = read_memfd(job.input_fd)
    finally:
        job.close()
    assert "key" in table.column_names
    pd.testing.assert_frame_equal(table.to_pandas(), frame)


def test_a_filtered_frame_keeps_its_index() -> None:
    frame = pd.DataFrame({"x": range(10)})
    filtered = frame[frame["x"] % 3 == 0]
    job = prepare(table=filtered)
    try:
        assert job.input_fd is not None
        restored = read_memfd(job.input_fd).to_pandas()
    finally:
        job.close()
    assert list(restored.index) == [0, 3, 6, 9]


def test_an_arrow_table_is_sent_as_is() -> None:
    table = pa.table({"a": pa.array([1, None, 3], pa.int32()), "b": ["x", "y", "z"]})
    job = prepare(table=table)
    try:
        assert job.input_fd is not None
        assert read_memfd(job.input_fd).equals(table)
    finally:
        job.close()


def test_other_tables_are_refused() -> None:
    with pytest.raises(TypeError, match="DataFrame"):
        prepare(table=[{"x": 1}])


def test_encode_request() -> None:
    job = prepare(kind="exec", params={"a": 1}).job
    request = api_pb2.Request.FromString(encode_request(42, job))
    assert request.id == 42
    assert request.job == job


def response(**fields: Any) -> bytes:
    payload: bytes = api_pb2.Response(**fields).SerializeToString()
    return payload


def no_fd() -> int:
    raise AssertionError("no fd should be taken")


def test_decode_reply_without_table() -> None:
    payload = response(id=5, outcome=api_pb2.Outcome(ok=api_pb2.Ok(json="[1]")))
    reply = decode_reply(payload, no_fd)
    assert (reply.id, reply.table_fd, reply.protocol_error) == (5, None, None)
    outcome = reply.to_outcome()
    assert isinstance(outcome, Ok)
    assert outcome.value == [1]


def test_decode_reply_takes_the_table_fd() -> None:
    fd = os.memfd_create("out")
    with open(fd, "wb", closefd=False) as sink, pa.ipc.new_file(sink, pa.schema([])) as writer:
        writer.write_table(pa.table({}))
    payload = response(id=6, outcome=api_pb2.Outcome(ok=api_pb2.Ok(has_table=True)))
    reply = decode_reply(payload, lambda: fd)
    assert reply.table_fd == fd
    outcome = reply.to_outcome()
    assert reply.table_fd is None
    assert outcome.ok
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)


def test_discard_closes_the_table_fd() -> None:
    fd = os.memfd_create("out")
    payload = response(id=6, outcome=api_pb2.Outcome(ok=api_pb2.Ok(has_table=True)))
    reply = decode_reply(payload, lambda: fd)
    reply.discard()
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)


def test_decode_protocol_error() -> None:
    payload = response(protocol_error=api_pb2.ProtocolError(message="frame too large"))
    reply = decode_reply(payload, no_fd)
    assert reply.id == 0
    assert reply.outcome is None
    assert reply.protocol_error is not None
    assert "frame too large" in reply.protocol_error
    with pytest.raises(ProtocolError, match="frame too large"):
        reply.to_outcome()


def test_decode_garbage() -> None:
    with pytest.raises(ProtocolError, match="malformed"):
        decode_reply(b"\xff\xff\xff", no_fd)


def test_decode_a_response_without_body() -> None:
    with pytest.raises(ProtocolError, match="without a body"):
        decode_reply(response(id=3), no_fd)


def test_decode_a_missing_fd() -> None:
    from pyclave import _wire

    decoder = _wire.FrameDecoder(1024)
    payload = response(id=1, outcome=api_pb2.Outcome(ok=api_pb2.Ok(has_table=True)))
    with pytest.raises(ProtocolError, match="did not arrive"):
        decode_reply(payload, decoder.take_fd)


def test_read_table_keeps_strings_valid_after_the_fd_is_closed() -> None:
    frame = pd.DataFrame({"s": [f"value {i}" for i in range(10_000)], "x": range(10_000)})
    fd = os.memfd_create("out")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with open(fd, "wb", closefd=False) as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    result = read_table_fd(fd)
    os.close(fd)
    del table
    pd.testing.assert_frame_equal(result, frame)
    assert result["s"].str.len().sum() == frame["s"].str.len().sum()
