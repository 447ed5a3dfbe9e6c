from __future__ import annotations

import json
import logging

from opentelemetry import trace

from headwater.shared.settings import TelemetrySettings
from headwater.shared.telemetry import JsonFormatter, configure_tracing


def test_without_a_collector_spans_have_ids_but_are_not_recorded() -> None:
    provider = configure_tracing("test", TelemetrySettings())
    with provider.get_tracer("t").start_as_current_span("work") as span:
        context = span.get_span_context()
        assert context.is_valid
        assert not span.is_recording()


def test_json_log_lines_carry_the_trace_id_and_extra_fields() -> None:
    provider = configure_tracing("test", TelemetrySettings())
    record = logging.makeLogRecord({"msg": "hello %s", "args": ("world",), "levelname": "INFO",
                                    "name": "x", "model": "churn"})
    with provider.get_tracer("t").start_as_current_span("work") as span:
        trace.set_span_in_context(span)
        line = json.loads(JsonFormatter("gateway").format(record))
        expected_trace = format(span.get_span_context().trace_id, "032x")
    assert line["msg"] == "hello world"
    assert line["service"] == "gateway"
    assert line["model"] == "churn"
    assert line["trace_id"] == expected_trace
