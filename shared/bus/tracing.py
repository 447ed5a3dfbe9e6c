"""W3C trace context (``traceparent``, ``tracestate``) in Kafka record headers.

>>> from opentelemetry import trace
>>> from opentelemetry.sdk.trace import TracerProvider
>>> tracer = TracerProvider().get_tracer("doc")
>>> with tracer.start_as_current_span("produce") as span:
...     headers = inject_trace_headers()
>>> [name for name, _ in headers]
['traceparent']
>>> ctx = extract_trace_context(headers)
>>> trace.get_current_span(ctx).get_span_context().trace_id == span.get_span_context().trace_id
True
>>> inject_trace_headers()  # no active span: nothing to propagate
[]
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry import propagate
from opentelemetry.context import Context

from headwater.shared.bus.codec import Header

TRACE_HEADERS = ("traceparent", "tracestate")


def inject_trace_headers(context: Context | None = None) -> list[tuple[str, bytes]]:
    """Headers carrying ``context`` (the current one by default); empty when there is none."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return [(name, carrier[name].encode("ascii")) for name in TRACE_HEADERS if carrier.get(name)]


def extract_trace_context(headers: Iterable[Header] | None) -> Context:
    """The trace context a record carries, to parent a consumer span on.

    Unknown headers, headers without a value and undecodable values are
    ignored: a bad header never stops a consumer.
    """
    carrier: dict[str, str] = {}
    for name, value in headers or ():
        key = name.lower()
        if key in TRACE_HEADERS and value is not None:
            try:
                carrier[key] = value.decode("ascii")
            except UnicodeDecodeError:
                continue
    return propagate.extract(carrier)
