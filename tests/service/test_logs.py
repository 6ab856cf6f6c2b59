import io
import json
import logging

from opentelemetry import trace

from service.logs import JsonFormatter


def test_json_lines_carry_the_trace_of_the_work_they_log() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("whyslow.test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with trace.get_tracer("test").start_as_current_span("work") as span:
            logger.info("analysed %s", "r-1")
        logger.warning("outside any span")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    inside, outside, failed = (json.loads(line) for line in stream.getvalue().splitlines())
    context = span.get_span_context()
    assert inside["message"] == "analysed r-1" and inside["level"] == "info"
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"
    assert "trace_id" not in outside and outside["level"] == "warning"
    assert "ValueError: boom" in failed["exception"]
