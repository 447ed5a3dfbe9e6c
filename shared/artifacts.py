"""The artifact codec: River models as signed, content-addressed bytes.

An artifact is the pickle (protocol 5) of a River estimator, addressed by its
SHA-256 and signed with HMAC-SHA256 under the platform's signing key. Nothing
is unpickled before its signature verifies, and even then only through an
unpickler that resolves the globals River models are made of (River's model
packages, a few numpy reconstructors, ``collections`` containers…) and refuses
any other.

>>> from river import linear_model
>>> codec = ArtifactCodec("secret")
>>> artifact = codec.encode(linear_model.LinearRegression())
>>> artifact.format, len(artifact.sha256), artifact.size_bytes == len(artifact.content)
('river-pickle/v1', 64, True)
>>> model = codec.decode(artifact.content, artifact.signature, artifact.sha256)
>>> type(model).__name__
'LinearRegression'
>>> try:
...     ArtifactCodec("another key").decode(artifact.content, artifact.signature)
... except ArtifactIntegrityError as exc:
...     print(exc)
artifact signature does not verify: wrong signing key or tampered content
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import io
import pickle
import types
from dataclasses import dataclass
from typing import Any

from river import base

from headwater.shared.errors import ArtifactIntegrityError, ResourceExhausted
from headwater.shared.settings import ArtifactSettings
from headwater.shared.specs import HEADWATER_COMPONENTS

FORMAT = "river-pickle/v1"
PICKLE_PROTOCOL = 5
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


def content_sha256(content: bytes) -> str:
    """The lowercase hex SHA-256 of ``content``: an artifact's address.

    >>> content_sha256(b"")
    'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
    """
    return hashlib.sha256(content).hexdigest()


@dataclass(frozen=True)
class SignedArtifact:
    """Encoded model bytes with their digest, signature and format."""

    content: bytes
    sha256: str
    signature: str
    format: str = FORMAT

    @property
    def size_bytes(self) -> int:
        """Length of the encoded content."""
        return len(self.content)


class ArtifactCodec:
    """Encodes, signs, verifies and decodes River models.

    Args:
        signing_key: The HMAC-SHA256 key shared by every service of a deployment.
        max_bytes: Largest artifact accepted, encoded or decoded.

    """

    def __init__(self, signing_key: str | bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        key = signing_key.encode() if isinstance(signing_key, str) else bytes(signing_key)
        if not key:
            raise ValueError("the artifact signing key must not be empty")
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self._key = key
        self.max_bytes = max_bytes

    @classmethod
    def from_settings(cls, settings: ArtifactSettings) -> ArtifactCodec:
        """A codec configured by ``HEADWATER_ARTIFACT_*`` settings."""
        return cls(settings.signing_key.get_secret_value(), settings.max_bytes)

    def __repr__(self) -> str:
        return f"ArtifactCodec(max_bytes={self.max_bytes})"  # never the key

    def encode(self, model: Any) -> SignedArtifact:
        """Pickle, address and sign a River estimator.

        Raises:
            TypeError: ``model`` is not a River estimator.
            ResourceExhausted: the encoded model is larger than ``max_bytes``.

        """
        if not isinstance(model, base.Estimator):
            raise TypeError(f"expected a River estimator, got {type(model).__name__}")
        content = pickle.dumps(model, protocol=PICKLE_PROTOCOL)
        if len(content) > self.max_bytes:
            raise ResourceExhausted(
                f"encoded model is {len(content)} bytes, over the limit of {self.max_bytes}"
            )
        return SignedArtifact(content, content_sha256(content), self.sign(content), FORMAT)

    def sign(self, content: bytes) -> str:
        """The lowercase hex HMAC-SHA256 of ``content`` under the signing key."""
        return hmac.new(self._key, content, hashlib.sha256).hexdigest()

    def verify(self, content: bytes, signature: str, sha256: str | None = None) -> None:
        """Check size, digest (when given) and signature, in constant time.

        Raises:
            ArtifactIntegrityError: naming which check failed.

        """
        if sha256 is not None:
            self.verify_digest(content, sha256)
        elif len(content) > self.max_bytes:
            raise ArtifactIntegrityError(
                f"artifact is {len(content)} bytes, over the limit of {self.max_bytes}"
            )
        if not _same(self.sign(content), signature):
            raise ArtifactIntegrityError(
                "artifact signature does not verify: wrong signing key or tampered content"
            )

    def verify_digest(self, content: bytes, sha256: str) -> None:
        """Check size and digest, in constant time (not the signature: see :meth:`verify`).

        Raises:
            ArtifactIntegrityError: naming which check failed.

        """
        if len(content) > self.max_bytes:
            raise ArtifactIntegrityError(
                f"artifact is {len(content)} bytes, over the limit of {self.max_bytes}"
            )
        if not _same(content_sha256(content), sha256):
            raise ArtifactIntegrityError(
                f"artifact sha256 mismatch: expected {sha256[:80]!r}, "
                f"content hashes to {content_sha256(content)!r}"
            )

    def decode(self, content: bytes, signature: str, sha256: str | None = None) -> Any:
        """Verify, then unpickle with the restricted unpickler.

        Raises:
            ArtifactIntegrityError: the artifact does not verify, refers to a
                global outside the allow-list, or does not hold a River estimator.

        """
        self.verify(content, signature, sha256)
        return restricted_loads(content)

    def decode_addressed(self, content: bytes, sha256: str) -> Any:
        """Check size and digest, then unpickle content a signed envelope addresses.

        For content whose ``sha256`` is covered by a signature the caller has
        already verified, such as the state of a ModelUpdate
        (:mod:`headwater.shared.model_updates`); a digest nobody signed proves nothing.

        Raises:
            ArtifactIntegrityError: the content does not match ``sha256``, or
                does not unpickle into a River estimator.

        """
        self.verify_digest(content, sha256)
        return restricted_loads(content)

    def load(self, artifact: SignedArtifact) -> Any:
        """Decode a :class:`SignedArtifact`, checking its format first."""
        if artifact.format != FORMAT:
            raise ArtifactIntegrityError(
                f"artifact format {artifact.format!r} is not supported; expected {FORMAT!r}"
            )
        return self.decode(artifact.content, artifact.signature, artifact.sha256)


def _same(expected: str, given: object) -> bool:
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(expected.encode(), given.strip().lower().encode("utf-8"))


# --- restricted unpickling ----------------------------------------------------------

# River packages a model can be made of; datasets, streams, compat and the like
# (which read files or reach the network) are deliberately absent.
_RIVER_PACKAGES = frozenset(
    "_river_rust base compose drift ensemble feature_extraction forest linear_model metrics "
    "multiclass naive_bayes neighbors optim preprocessing proba stats tree utils".split()
)
# Globals outside River that pickled River models were found to need
# (tests/unit/shared/test_artifacts.py round-trips every allowed component).
_SAFE_GLOBALS: dict[str, frozenset[str]] = {
    "builtins": frozenset(
        "bool bytearray bytes complex dict float frozenset int list object range set "
        "slice str tuple".split()
    ),
    "collections": frozenset({"Counter", "OrderedDict", "defaultdict", "deque"}),
    "copy": frozenset({"deepcopy"}),
    "functools": frozenset({"partial"}),
    "random": frozenset({"Random"}),
    "statistics": frozenset({"NormalDist"}),
    "numpy": frozenset({"dtype", "ndarray"}),
    "numpy._core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy._core.numeric": frozenset({"_frombuffer"}),
    "numpy.core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy.core.numeric": frozenset({"_frombuffer"}),
    "numpy.random._mt19937": frozenset({"MT19937"}),
    "numpy.random._pcg64": frozenset({"PCG64"}),
    "numpy.random._pickle": frozenset(
        {"__bit_generator_ctor", "__generator_ctor", "__randomstate_ctor"}
    ),
    "numpy.random.bit_generator": frozenset({"SeedSequence", "__pyx_unpickle_SeedSequence"}),
    # headwater's drop-in replacements of a few River components.
    "headwater.shared.specs": frozenset(cls.__name__ for cls in HEADWATER_COMPONENTS),
}


def _is_river_module(module: str) -> bool:
    parts = module.split(".")
    return len(parts) > 1 and parts[0] == "river" and parts[1] in _RIVER_PACKAGES


def _bound_method_of_river(obj: object, name: str) -> Any:
    """``getattr`` as pickle uses it for bound methods, confined to River objects.

    River stores strategies as bound methods (``self._test = self._test_both``);
    pickle rebuilds them with ``getattr(instance, name)``. A general ``getattr``
    would let a pickle walk from any allowed function to ``__globals__`` and out.
    """
    if (
        not isinstance(name, str)
        or name.startswith("__")
        or isinstance(obj, type | types.ModuleType)
        or not _is_river_module(type(obj).__module__)
    ):
        raise ArtifactIntegrityError(f"artifact calls getattr({type(obj).__name__}, {name!r})")
    attr = getattr(obj, name)
    if not (inspect.ismethod(attr) and _is_river_module(attr.__func__.__module__)):
        raise ArtifactIntegrityError(f"artifact calls getattr(..., {name!r}): not a River method")
    return attr


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name == "getattr":
            return _bound_method_of_river
        if name in _SAFE_GLOBALS.get(module, ()):
            return super().find_class(module, name)
        if _is_river_module(module) and "__" not in name:
            obj = super().find_class(module, name)
            if isinstance(obj, type | types.FunctionType | types.BuiltinFunctionType) and (
                _is_river_module(getattr(obj, "__module__", "") or "")
            ):
                return obj
        raise ArtifactIntegrityError(f"artifact refers to a refused global: {module}.{name}")


def restricted_loads(content: bytes) -> Any:
    """Unpickle a River estimator, resolving only allow-listed globals.

    Call it only on verified content; :meth:`ArtifactCodec.decode` does.

    Raises:
        ArtifactIntegrityError: a global is refused, the bytes are not a valid
            pickle, or the result is not a River estimator.

    """
    try:
        model = _RestrictedUnpickler(io.BytesIO(content)).load()
    except ArtifactIntegrityError:
        raise
    except Exception as exc:
        raise ArtifactIntegrityError(f"artifact could not be unpickled: {exc!r}") from exc
    if not isinstance(model, base.Estimator):
        raise ArtifactIntegrityError(
            f"artifact holds a {type(model).__name__}, not a River estimator"
        )
    return model
