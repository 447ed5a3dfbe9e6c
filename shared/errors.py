"""The one error hierarchy of headwater.

Services raise these; :mod:`headwater.shared.grpc_errors` is the single place
that turns them into gRPC status codes (HTTP routes answer with the HTTP status
of that code, :mod:`headwater.shared.http`). Anything else that escapes a
handler is an internal error: logged with its trace id, never shown to the caller.
"""

from __future__ import annotations


class HeadwaterError(Exception):
    """Base class of every error a caller may see, with a message naming the problem."""


class InvalidInput(HeadwaterError):
    """The request or event is malformed or violates a schema."""


class NotFound(HeadwaterError):
    """A named resource does not exist."""


class ModelNotFound(NotFound):
    """No model (or version, or alias) of that name."""


class AlreadyExists(HeadwaterError):
    """A resource of that name exists already."""


class FailedPrecondition(HeadwaterError):
    """The system is not in a state that allows the operation."""


class ModelNotReady(HeadwaterError):
    """The model exists but cannot serve yet (not deployed, not loaded)."""


class Unauthenticated(HeadwaterError):
    """The caller did not prove who it is."""


class PermissionDenied(HeadwaterError):
    """The caller may not do this."""


class ArtifactIntegrityError(HeadwaterError):
    """An artifact's digest or signature does not verify; it must not be loaded."""


class ResourceExhausted(HeadwaterError):
    """A limit was hit (batch size, buffer, message size)."""


class Unavailable(HeadwaterError):
    """A dependency is down; retrying later may succeed."""
