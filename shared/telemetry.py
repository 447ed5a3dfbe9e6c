"""Structured logs and OpenTelemetry tracing, set up once per process."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased

from headwater.shared.settings import TelemetrySettings

_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line, with the active trace id and any ``extra`` fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as a JSON line."""
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
        entry.update(
            {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and k[0] != "_"}
        )
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(service: str, settings: TelemetrySettings) -> None:
    """Send every log line to stderr, as JSON or as text."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for noisy in ("aiokafka", "kafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))


def configure_tracing(service: str, settings: TelemetrySettings) -> TracerProvider:
    """Install a tracer provider; spans are recorded and exported only when a collector is set.

    Without a collector, root spans are not sampled: they still carry trace ids (for logs
    and the W3C headers of events) but cost no recording on the hot path. Incoming
    sampled contexts are honoured either way.
    """
    sampler = ParentBased(ALWAYS_ON if settings.otlp_endpoint else ALWAYS_OFF)
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"headwater-{service}"}), sampler=sampler
    )
    if settings.otlp_endpoint:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError:
            logging.getLogger(__name__).warning(
                "otlp_endpoint set but opentelemetry-exporter-otlp is not installed"
            )
        else:
            exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint, insecure=True)
            provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def setup_telemetry(service: str, settings: TelemetrySettings) -> None:
    """Configure logs and traces for a service process."""
    configure_logging(service, settings)
    configure_tracing(service, settings)
