"""The single mapping from headwater errors to gRPC status codes.

HTTP routes answer with the HTTP status of the same code
(:func:`headwater.shared.http.http_status_for`), so an error has one status
whichever protocol carries it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from opentelemetry import trace

from headwater.shared import errors

log = logging.getLogger(__name__)

_STATUS: tuple[tuple[type[errors.HeadwaterError], grpc.StatusCode], ...] = (
    (errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ModelNotReady, grpc.StatusCode.UNAVAILABLE),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.ArtifactIntegrityError, grpc.StatusCode.DATA_LOSS),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
)


# The way back, for clients: a status received becomes the matching headwater error.
_ERRORS: dict[grpc.StatusCode, type[errors.HeadwaterError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidInput,
    grpc.StatusCode.OUT_OF_RANGE: errors.InvalidInput,
    grpc.StatusCode.NOT_FOUND: errors.ModelNotFound,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.DATA_LOSS: errors.ArtifactIntegrityError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.Unavailable,
}


def error_for(code: grpc.StatusCode, details: str) -> errors.HeadwaterError:
    """The headwater error of a gRPC status a client received.

    >>> error_for(grpc.StatusCode.NOT_FOUND, "no model named 'x'")
    ModelNotFound("no model named 'x'")
    >>> type(error_for(grpc.StatusCode.INTERNAL, "boom")).__name__
    'HeadwaterError'
    """
    return _ERRORS.get(code, errors.HeadwaterError)(details)


def status_for(error: BaseException) -> grpc.StatusCode:
    """Return the gRPC status code for an error.

    >>> status_for(errors.ModelNotFound("no model 'x'")).name
    'NOT_FOUND'
    >>> status_for(ValueError("boom")).name
    'INTERNAL'
    """
    for kind, code in _STATUS:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def _trace_id() -> str:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else "-"


def caller_status(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status and message a caller sees for ``error``; internals never leak.

    Call it while handling ``error``: an internal error is logged with its
    traceback and trace id, and the caller sees only the trace id.

    >>> code, message = caller_status(errors.ModelNotFound("no model 'x'"))
    >>> code.name, message
    ('NOT_FOUND', "no model 'x'")
    """
    code = status_for(error)
    if code is grpc.StatusCode.INTERNAL:
        trace_id = _trace_id()
        log.exception("internal error", extra={"trace_id": trace_id})
        return code, f"internal error (trace id {trace_id})"
    return code, str(error)


async def abort_with(context: grpc.aio.ServicerContext, error: BaseException) -> None:
    """Abort the RPC with the status for ``error``; internals never leak."""
    await context.abort(*caller_status(error))


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def grpc_errors(method: F) -> F:
    """Decorate an async servicer method so errors become gRPC statuses."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # the one place errors become statuses
            await abort_with(context, error)

    return wrapper  # type: ignore[return-value]
