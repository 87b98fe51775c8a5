"""Per-job resource limits."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from pyclave._proto import api_pb2

_MAX_U64 = 2**64 - 1


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Per-job limits sent with a request.

    `None` means "not set here": a per-call value inherits the client's
    default, and an unset client default leaves the choice to the server.
    `0` explicitly asks for the server's limit. A value above the server's
    limit is rejected by the server (`Rejected(code="limit_too_high")`),
    never silently lowered.
    """

    memory_limit_bytes: int | None = None
    wall_timeout_ms: int | None = None
    cpu_timeout_ms: int | None = None

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{field.name} must be an int or None, not {type(value).__name__}")
            if not 0 <= value <= _MAX_U64:
                raise ValueError(f"{field.name} must be between 0 and 2**64-1, not {value}")

    def updated(
        self,
        *,
        memory_limit_bytes: int | None = None,
        wall_timeout_ms: int | None = None,
        cpu_timeout_ms: int | None = None,
    ) -> Limits:
        """These limits with every argument that is not None replacing the current value."""
        changes = {
            "memory_limit_bytes": memory_limit_bytes,
            "wall_timeout_ms": wall_timeout_ms,
            "cpu_timeout_ms": cpu_timeout_ms,
        }
        return replace(
            self, **{name: value for name, value in changes.items() if value is not None}
        )

    def to_proto(self) -> api_pb2.Limits:
        return api_pb2.Limits(
            memory_limit_bytes=self.memory_limit_bytes or 0,
            wall_timeout_ms=self.wall_timeout_ms or 0,
            cpu_timeout_ms=self.cpu_timeout_ms or 0,
        )
