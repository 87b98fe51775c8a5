"""Client for the pyclave supervisor: run untrusted pandas code in confined workers.

    import pyclave

    with pyclave.Client("/run/pyclave.sock") as client:
        outcome = client.transform(
            "def transform(table, params):\n"
            "    table['x'] = table['x'] * params['k']\n"
            "    return table\n",
            df,
            {"k": 2},
        )
    match outcome:
        case pyclave.Ok(table=table):
            ...
        case pyclave.UserError(type=type_, message=message):
            ...

Job failures (exceptions, timeouts, OOM, ...) come back as outcomes, never
as exceptions; `ProtocolError` and `ConnectionLost` are about the connection.
"""

from pyclave._jobs import DEFAULT_MAX_FRAME_BYTES
from pyclave.aio import AsyncClient
from pyclave.client import Client
from pyclave.errors import ConnectionLost, ProtocolError, PyclaveError
from pyclave.limits import Limits
from pyclave.outcome import (
    Killed,
    Ok,
    Outcome,
    OutOfMemory,
    OutputRejected,
    Rejected,
    Timeout,
    Usage,
    UserError,
    outcome_from_proto,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "AsyncClient",
    "Client",
    "ConnectionLost",
    "Killed",
    "Limits",
    "Ok",
    "OutOfMemory",
    "Outcome",
    "OutputRejected",
    "ProtocolError",
    "PyclaveError",
    "Rejected",
    "Timeout",
    "Usage",
    "UserError",
    "__version__",
    "outcome_from_proto",
]
