"""The sync and async clients end to end against a fake supervisor on a socketpair."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fake_supervisor import (
    Answer,
    FakeSupervisor,
    Received,
    open_fds,
    read_input_table,
    send_answer,
    simulate,
)
from pyclave import (
    AsyncClient,
    Client,
    ConnectionLost,
    Limits,
    Ok,
    Outcome,
    ProtocolError,
    Rejected,
    _wire,
)
from pyclave._proto import api_pb2

DOUBLE = """
def transform(table, params):
    table['x'] = table['x'] * params['k']
    return table
"""


def numbers(rows: int = 1000, offset: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": np.arange(offset, offset + rows, dtype=np.int64),
            "label": [f"r{i}" for i in range(rows)],
        }
    )


def doubled(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    expected = frame.copy()
    expected["x"] = expected["x"] * k
    return expected


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    client_end, server_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield client_end, server_end
    client_end.close()
    server_end.close()


def outcome_frame(request_id: int, **kind: object) -> bytes:
    response = api_pb2.Response(id=request_id, outcome=api_pb2.Outcome(**kind))
    return _wire.encode_frame(response.SerializeToString())


# -- sync ----------------------------------------------------------------------------------------


def test_sync_transform_passes_tables_both_ways(pair: tuple[socket.socket, socket.socket]) -> None:
    client_end, server_end = pair
    server = FakeSupervisor(server_end)
    server.start()
    frame = numbers()
    with Client.from_socket(client_end) as client:
        outcome = client.transform(DOUBLE, frame, {"k": 3}, wall_timeout_ms=2000)
    server.finish()

    assert isinstance(outcome, Ok)
    assert outcome.table is not None
    pd.testing.assert_frame_equal(outcome.table, doubled(frame, 3))
    assert outcome.usage.wall_time_us == 7

    (received,) = server.received
    job = received.request.job
    assert received.request.id >= 1
    assert job.kind == api_pb2.JOB_KIND_TRANSFORM
    assert job.inline_code == DOUBLE
    assert json.loads(job.params_json) == {"k": 3}
    assert job.has_input_table
    assert job.limits.wall_timeout_ms == 2000
    assert received.seals is not None
    assert received.table is not None
    pd.testing.assert_frame_equal(received.table.to_pandas(), frame)


def test_sync_exec_and_increasing_ids(pair: tuple[socket.socket, socket.socket]) -> None:
    client_end, server_end = pair
    server = FakeSupervisor(server_end)
    server.start()
    with Client.from_socket(client_end, limits=Limits(cpu_timeout_ms=50)) as client:
        first = client.exec("def main(params):\n    return params\n", {"n": 1})
        second = client.exec(script="hello.py", cpu_timeout_ms=70)
    server.finish()

    assert isinstance(first, Ok)
    assert first.value == {"echo": {"n": 1}}
    ids = [received.request.id for received in server.received]
    assert ids[0] < ids[1]
    assert first.stdout == f"job {ids[0]}\n".encode()
    assert isinstance(second, Ok)
    assert second.value == {"echo": {}}
    jobs = [received.request.job for received in server.received]
    assert [job.kind for job in jobs] == [api_pb2.JOB_KIND_EXEC] * 2
    assert jobs[1].script_name == "hello.py"
    assert [job.limits.cpu_timeout_ms for job in jobs] == [50, 70]
    assert not any(job.has_input_table for job in jobs)


def test_sync_client_shared_between_threads(pair: tuple[socket.socket, socket.socket]) -> None:
    client_end, server_end = pair
    server = FakeSupervisor(server_end)
    server.start()
    client = Client.from_socket(client_end)
    failures: list[str] = []

    def work(worker: int) -> None:
        for k in range(1, 6):
            frame = numbers(50, offset=worker * 1000)
            outcome = client.transform(DOUBLE, frame, {"k": k})
            if not (isinstance(outcome, Ok) and outcome.table is not None):
                failures.append(f"{worker}/{k}: {outcome!r}")
            elif not outcome.table.equals(doubled(frame, k)):
                failures.append(f"{worker}/{k}: wrong table")

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    server.finish()
    assert failures == []
    assert len(server.received) == 30


def test_sync_leaks_no_fds(pair: tuple[socket.socket, socket.socket]) -> None:
    client_end, server_end = pair
    server = FakeSupervisor(server_end)
    before = open_fds()
    server.start()
    with Client.from_socket(client_end) as client:
        for k in range(20):
            assert client.transform(DOUBLE, numbers(100), {"k": k}).ok
    server.finish()
    assert open_fds() <= before


def test_sync_bad_arguments_send_nothing(pair: tuple[socket.socket, socket.socket]) -> None:
    client_end, server_end = pair
    server = FakeSupervisor(server_end)
    server.start()
    with Client.from_socket(client_end) as client:
        with pytest.raises(TypeError):
            client.transform(DOUBLE, script="x.py")
        with pytest.raises(TypeError):
            client.exec("def main(): pass", params=[1])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="between"):
            client.exec("def main(): pass", wall_timeout_ms=-5)
        assert client.exec("def main(): pass").ok
    server.finish()
    assert len(server.received) == 1


def test_sync_other_outcomes(pair: tuple[socket.socket, socket.socket]) -> None:
    client_end, server_end = pair

    def reject(received: Received) -> Answer:
        outcome = api_pb2.Outcome(
            rejected=api_pb2.Rejected(code=api_pb2.Rejected.CODE_QUEUE_FULL, reason="busy")
        )
        return Answer(api_pb2.Response(id=received.request.id, outcome=outcome))

    server = FakeSupervisor(server_end, reject)
    server.start()
    with Client.from_socket(client_end) as client:
        outcome = client.transform(DOUBLE, numbers(3))
    server.finish()
    assert isinstance(outcome, Rejected)
    assert (outcome.code, outcome.reason, outcome.ok) == ("queue_full", "busy", False)


def test_sync_protocol_error_closes_the_client(pair: tuple[socket.socket, socket.socket]) -> None:
    client_end, server_end = pair
    error = api_pb2.Response(protocol_error=api_pb2.ProtocolError(message="bad frame"))
    server_end.sendall(_wire.encode_frame(error.SerializeToString()))
    client = Client.from_socket(client_end)
    with pytest.raises(ProtocolError, match="bad frame"):
        client.exec("def main(): pass")
    assert client.closed
    with pytest.raises(ConnectionLost, match="bad frame"):
        client.exec("def main(): pass")


def test_sync_connection_closed_by_the_server(pair: tuple[socket.socket, socket.socket]) -> None:
    client_end, server_end = pair
    server_end.close()
    client = Client.from_socket(client_end)
    with pytest.raises(ConnectionLost) as caught:
        client.exec("def main(): pass")
    assert isinstance(caught.value, ConnectionError)
    assert client.closed


def test_sync_oversized_response(pair: tuple[socket.socket, socket.socket]) -> None:
    client_end, server_end = pair
    server_end.sendall(outcome_frame(1, ok=api_pb2.Ok(json=json.dumps("x" * 5000))))
    client = Client.from_socket(client_end, max_frame_bytes=1000)
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        client.exec("def main(): pass")
    assert client.closed


def test_sync_response_to_another_request(pair: tuple[socket.socket, socket.socket]) -> None:
    client_end, server_end = pair
    server_end.sendall(outcome_frame(999, ok=api_pb2.Ok(json="1")))
    client = Client.from_socket(client_end)
    with pytest.raises(ProtocolError, match="999"):
        client.exec("def main(): pass")


def test_sync_close_wakes_a_waiting_thread(pair: tuple[socket.socket, socket.socket]) -> None:
    client_end, _server_end = pair  # the server never answers
    client = Client.from_socket(client_end)
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            client.exec("def main(): pass")
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=wait)
    thread.start()
    thread.join(0.2)
    client.close()
    thread.join(5)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], ConnectionLost)
    assert "client was closed" in str(errors[0])


def serve_unix(path: Path, connections: int) -> threading.Thread:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()

    def accept() -> None:
        with listener:
            servers = []
            for _ in range(connections):
                conn, _ = listener.accept()
                server = FakeSupervisor(conn)
                server.start()
                servers.append(server)
            for server in servers:
                server.finish()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    return thread


def test_connect_by_path(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    thread = serve_unix(path, connections=3)
    with Client(path) as client:
        assert client.exec("def main(): pass").ok

    async def main() -> None:
        client = await AsyncClient.connect(str(path))
        assert (await client.exec("def main(): pass")).ok
        await client.close()
        async with AsyncClient.connect(path) as client:
            assert (await client.exec("def main(): pass")).ok
        assert client.closed

    asyncio.run(main())
    thread.join(10)
    assert not thread.is_alive()


def test_connect_to_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Client(tmp_path / "missing.sock")

    async def main() -> None:
        with pytest.raises(FileNotFoundError):
            await AsyncClient.connect(tmp_path / "missing.sock")

    asyncio.run(main())


# -- async ---------------------------------------------------------------------------------------


def test_async_out_of_order_responses(pair: tuple[socket.socket, socket.socket]) -> None:
    client_end, server_end = pair
    server = FakeSupervisor(server_end, first_batch=2, reverse=True)
    server.start()
    first, second = numbers(1000), numbers(10, offset=5)

    async def main() -> tuple[Outcome, Outcome, Outcome]:
        async with AsyncClient.from_socket(client_end) as client:
            one, two = await asyncio.gather(
                client.transform(DOUBLE, first, {"k": 2}),
                client.transform(DOUBLE, second, {"k": 10}),
            )
            three = await client.exec("def main(params):\n    return params\n", {"z": True})
            return one, two, three

    one, two, three = asyncio.run(main())
    server.finish()

    assert [received.request.id for received in server.received] == [1, 2, 3]
    assert server.answered == [2, 1, 3]
    assert isinstance(one, Ok)
    assert one.table is not None
    assert isinstance(two, Ok)
    assert two.table is not None
    pd.testing.assert_frame_equal(one.table, doubled(first, 2))
    pd.testing.assert_frame_equal(two.table, doubled(second, 10))
    assert isinstance(three, Ok)
    assert three.value == {"echo": {"z": True}}


def test_async_many_concurrent_requests_in_shuffled_order(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    client_end, server_end = pair
    shuffler = random.Random(7)

    class Shuffling(FakeSupervisor):
        def _read_batch(self, reader: _wire.FrameReader, size: int) -> list[Received]:
            batch = super()._read_batch(reader, size)
            shuffler.shuffle(batch)
            return batch

    server = Shuffling(server_end, first_batch=20)
    before = open_fds()
    server.start()
    frames = [numbers(200, offset=i * 1000) for i in range(20)]

    async def main() -> list[Outcome]:
        async with AsyncClient.from_socket(client_end) as client:
            outcomes = await asyncio.gather(
                *(client.transform(DOUBLE, frame, {"k": i}) for i, frame in enumerate(frames))
            )
            assert client.pending == 0
            return outcomes

    outcomes = asyncio.run(main())
    server.finish()
    for i, (frame, outcome) in enumerate(zip(frames, outcomes, strict=True)):
        assert isinstance(outcome, Ok), outcome
        assert outcome.table is not None
        pd.testing.assert_frame_equal(outcome.table, doubled(frame, i))
    assert open_fds() <= before


def test_async_protocol_error_fails_every_waiting_call(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    client_end, server_end = pair

    def reader() -> None:
        frames = _wire.FrameReader(server_end, 1 << 20)
        for _ in range(3):
            frames.read_frame()
        error = api_pb2.Response(protocol_error=api_pb2.ProtocolError(message="confused"))
        _wire.send_frame(server_end, error.SerializeToString())

    thread = threading.Thread(target=reader)
    thread.start()

    async def main() -> None:
        client = AsyncClient.from_socket(client_end)
        results = await asyncio.gather(
            *(client.exec("def main(): pass") for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(result, ProtocolError) for result in results), results
        assert all("confused" in str(result) for result in results)
        assert client.closed
        with pytest.raises(ConnectionLost):
            await client.exec("def main(): pass")

    asyncio.run(main())
    thread.join(5)


def test_async_connection_lost_fails_every_waiting_call(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    client_end, server_end = pair

    def read_two_and_hang_up() -> None:
        frames = _wire.FrameReader(server_end, 1 << 20)
        for _ in range(2):
            frames.read_frame()
        server_end.close()

    thread = threading.Thread(target=read_two_and_hang_up)
    thread.start()

    async def main() -> None:
        client = AsyncClient.from_socket(client_end)
        results = await asyncio.gather(
            client.exec("def main(): pass"), client.exec("def main(): pass"),
            return_exceptions=True,
        )  # fmt: skip
        assert all(isinstance(result, ConnectionLost) for result in results), results
        assert client.closed
        assert client.pending == 0
        with pytest.raises(ConnectionLost):
            await client.exec("def main(): pass")

    asyncio.run(main())
    thread.join(5)


def test_async_close_fails_waiting_calls(pair: tuple[socket.socket, socket.socket]) -> None:
    client_end, _server_end = pair  # the server never answers

    async def main() -> None:
        client = AsyncClient.from_socket(client_end)
        waiting = asyncio.ensure_future(client.exec("def main(): pass"))
        while client.pending == 0:
            await asyncio.sleep(0.01)
        await client.close()
        with pytest.raises(ConnectionLost, match="closed"):
            await waiting

    asyncio.run(main())


def test_async_large_frames_do_not_interleave(pair: tuple[socket.socket, socket.socket]) -> None:
    """Frames much larger than the socket buffer, with fds, written concurrently."""
    client_end, server_end = pair

    class Slow(FakeSupervisor):
        def _read_batch(self, reader: _wire.FrameReader, size: int) -> list[Received]:
            time.sleep(0.02)  # let the client's writes pile up against a full buffer
            return super()._read_batch(reader, size)

    server = Slow(server_end)
    server.start()
    codes = [f"# {i}\n" + "#" * (1 << 20) + f"\n{DOUBLE}" for i in range(6)]

    async def main() -> list[Outcome]:
        async with AsyncClient.from_socket(client_end) as client:
            return await asyncio.gather(
                *(client.transform(code, numbers(100), {"k": 2}) for code in codes)
            )

    outcomes = asyncio.run(main())
    server.finish()
    assert all(isinstance(outcome, Ok) for outcome in outcomes)
    assert sorted(received.request.job.inline_code for received in server.received) == codes


def test_async_cancelled_call_does_not_disturb_others(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    client_end, server_end = pair
    release = threading.Event()

    def answer_when_released(received: Received) -> Answer:
        assert release.wait(10)
        return simulate(received)

    server = FakeSupervisor(server_end, answer_when_released, first_batch=2)
    before = open_fds()
    server.start()

    async def main() -> Ok:
        async with AsyncClient.from_socket(client_end) as client:
            doomed = asyncio.ensure_future(client.transform(DOUBLE, numbers(10), {"k": 1}))
            kept = asyncio.ensure_future(client.transform(DOUBLE, numbers(10), {"k": 2}))
            while len(server.received) < 2:
                await asyncio.sleep(0.01)
            doomed.cancel()
            await asyncio.sleep(0)
            release.set()
            outcome = await kept
            with pytest.raises(asyncio.CancelledError):
                await doomed
            # A later request still works on the same connection.
            assert (await client.exec("def main(): pass")).ok
            assert client.pending == 0
            assert isinstance(outcome, Ok)
            return outcome

    outcome = asyncio.run(main())
    server.finish()
    assert outcome.table is not None
    pd.testing.assert_frame_equal(outcome.table, doubled(numbers(10), 2))
    assert open_fds() <= before


def test_async_answers_in_one_burst(pair: tuple[socket.socket, socket.socket]) -> None:
    """Several answers with their fds arriving back to back are split correctly."""
    client_end, server_end = pair

    def burst() -> None:
        frames = _wire.FrameReader(server_end, 1 << 20)
        requests: list[Received] = []
        for _ in range(4):
            request = api_pb2.Request.FromString(frames.read_frame() or b"")
            fd = frames.take_fd()
            requests.append(Received(request, read_input_table(fd)))
            os.close(fd)
        for received in requests:
            send_answer(server_end, simulate(received))

    thread = threading.Thread(target=burst)
    thread.start()

    async def main() -> list[Outcome]:
        async with AsyncClient.from_socket(client_end) as client:
            return await asyncio.gather(
                *(client.transform(DOUBLE, numbers(5, offset=i), {"k": 3}) for i in range(4))
            )

    outcomes = asyncio.run(main())
    thread.join(5)
    for i, outcome in enumerate(outcomes):
        assert isinstance(outcome, Ok)
        assert outcome.table is not None
        pd.testing.assert_frame_equal(outcome.table, doubled(numbers(5, offset=i), 3))
