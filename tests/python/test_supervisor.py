"""End to end against a real supervisor with real workers (see conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pyclave import AsyncClient, Client, Ok, Rejected, Timeout, UserError

DOUBLE = """
def transform(table, params):
    table['x'] = table['x'] * params['k']
    return table
"""


@pytest.fixture
def client(supervisor_socket: Path) -> Iterator[Client]:
    with Client(supervisor_socket) as client:
        yield client


def numbers(rows: int, offset: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"x": np.arange(offset, offset + rows, dtype=np.int64)})


def test_transform_doubles_a_column(client: Client) -> None:
    frame = numbers(1000)
    outcome = client.transform(DOUBLE, frame, {"k": 2})
    assert isinstance(outcome, Ok), outcome
    assert outcome.table is not None
    pd.testing.assert_frame_equal(outcome.table, pd.DataFrame({"x": frame["x"] * 2}))
    assert outcome.usage.wall_time_us > 0


def test_exec_returns_json_and_stdout(client: Client) -> None:
    code = """
def main(params):
    print("hello", params["who"])
    return {"answer": 42, "items": [1, 2.5, None], "who": params["who"]}
"""
    outcome = client.exec(code, {"who": "world"})
    assert isinstance(outcome, Ok), outcome
    assert outcome.value == {"answer": 42, "items": [1, 2.5, None], "who": "world"}
    assert outcome.stdout == b"hello world\n"
    assert outcome.stdout_truncated is False
    assert outcome.table is None


def test_user_error(client: Client) -> None:
    code = """
def helper(value):
    raise ValueError(f"bad value: {value}")

def main():
    helper(7)
"""
    outcome = client.exec(code)
    assert isinstance(outcome, UserError), outcome
    assert outcome.type == "ValueError"
    assert outcome.message == "bad value: 7"
    assert "Traceback" in outcome.traceback
    assert "helper" in outcome.traceback
    assert "ValueError: bad value: 7" in outcome.traceback
    assert not outcome.ok


def test_wall_timeout(client: Client) -> None:
    code = "import time\n\ndef main():\n    time.sleep(30)\n"
    outcome = client.exec(code, wall_timeout_ms=500)
    assert isinstance(outcome, Timeout), outcome
    assert outcome.clock == "wall"
    assert outcome.limit_ms == 500


def test_missing_script_is_rejected(client: Client) -> None:
    outcome = client.exec(script="no-such-script-0d1f5c.py")
    assert isinstance(outcome, Rejected), outcome


def test_connection_survives_failures(client: Client) -> None:
    assert isinstance(client.exec("def main():\n    raise KeyError('k')\n"), UserError)
    outcome = client.exec("def main():\n    return 1\n")
    assert isinstance(outcome, Ok), outcome
    assert outcome.value == 1


def test_async_concurrent_transforms(supervisor_socket: Path) -> None:
    frames = [numbers(100 + i, offset=i * 1000) for i in range(20)]

    async def main() -> list[object]:
        async with AsyncClient.connect(supervisor_socket) as client:
            return await asyncio.gather(
                *(client.transform(DOUBLE, frame, {"k": i}) for i, frame in enumerate(frames))
            )

    outcomes = asyncio.run(main())
    assert len(outcomes) == 20
    for i, (frame, outcome) in enumerate(zip(frames, outcomes, strict=True)):
        assert isinstance(outcome, Ok), (i, outcome)
        assert outcome.table is not None
        pd.testing.assert_frame_equal(outcome.table, pd.DataFrame({"x": frame["x"] * i}))
