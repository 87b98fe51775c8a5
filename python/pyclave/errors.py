"""Exceptions raised by the pyclave clients.

Job failures are never exceptions: they come back as outcomes (see
`pyclave.outcome`). These exceptions are about the connection itself.
"""

from __future__ import annotations


class PyclaveError(Exception):
    """Base class of the exceptions the pyclave client raises."""


class ProtocolError(PyclaveError):
    """The supervisor and this client disagree about the protocol.

    Raised when the supervisor answers with a `ProtocolError` (it closes the
    connection after it) and when the client cannot make sense of what the
    supervisor sent (oversized or malformed frame, missing file descriptor).
    Unless noted otherwise the connection is closed afterwards.
    """


class ConnectionLost(PyclaveError, ConnectionError):
    """The connection to the supervisor is gone (closed by either side, or broken)."""
