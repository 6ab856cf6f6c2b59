"""Log templates: the lines one statement writes share a template, lines of different
statements do not, on hand-written lines of common formats and on TrainTicket's own Java
logs (a Nezha day under ``../shared/data``, skipped where it is absent)."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from itertools import islice
from pathlib import Path

import pytest

from baselines.ingest.log_template import MAX_TEMPLATE_CHARS, template_of
from service.contract import LogRecord

NEZHA_LOG = (
    Path(__file__).resolve().parents[3]
    / "shared/data/nezha-dev/rca_data/2023-01-29/log/08_43_log.csv"
)
STATEMENT = re.compile(r"\s([\w.]+#\d+)\s")
"""TrainTicket's logback pattern writes ``%logger{1}#%line``: which statement wrote a line."""


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (  # logback: time, thread, ids and numbers vary
            "2026-11-16T09:00:00.123Z ERROR [http-nio-8080-exec-3] c.x.PaymentService - charge "
            "4242 failed for order 9f1c2a7e-1b2c-4d5e-8f90-1234567890ab after 3 attempts",
            "2026-11-16T09:00:07.9Z ERROR [http-nio-8080-exec-12] c.x.PaymentService - charge "
            "77 failed for order 0b1c2a7e-1b2c-4d5e-8f90-1234567890cd after 12 attempts",
        ),
        (  # Python's logging: an address and a count
            "ERROR:root:Failed to connect to 10.0.0.12:5432 after 3 attempts",
            "ERROR:root:Failed to connect to 192.168.7.1:5433 after 10 attempts",
        ),
        (  # Go's logfmt: the message stays, its address and the other values go
            'time="2026-11-16T09:00:00Z" level=error msg="dial tcp 10.1.2.3:6379: connect: '
            'connection refused" duration=1.2s',
            'time="2026-11-16T09:01:00Z" level=error msg="dial tcp 10.1.2.9:6379: connect: '
            'connection refused" duration=15ms',
        ),
        (  # a JSON line: keys and the message stay, values go
            '{"level":"error","msg":"payment failed","order":"A-1234","amount":12.5,'
            '"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}',
            '{"level":"error","msg":"payment failed","order":"B-77","amount":3,'
            '"trace_id":"00f067aa0ba902b74bf92f3577b34da6"}',
        ),
        (  # a list of 2 and a list of 4, in brackets and in a Lombok toString
            "[getRoutes][Query routes][RouteIds: [a3f2, 9e71]] Route(id=17, stations=[a, b])",
            "[getRoutes][Query routes][RouteIds: [1, 2, 3, 4]] Route(id=9, stations=[a, b, c])",
        ),
        (  # quoted input, an apostrophe inside a word, an IPv6 address
            "I don't know why user 'alice' can't log in from 2001:db8::1",
            "I don't know why user 'bob-the-builder' can't log in from fe80::1ff:fe23:4567:890a",
        ),
    ],
)
def test_the_lines_of_one_statement_share_a_template(one: str, other: str) -> None:
    assert template_of(one) == template_of(other)
    assert "<*>" in template_of(one)


def test_what_names_the_statement_stays() -> None:
    assert template_of(
        "2026-11-16 09:00:00,123 WARN [main] o.s.Boot - Started Travel2Controller with log4j "
        "in 3.5 seconds [Step 4][Get Route By Id]"
    ) == (
        "<*> WARN [main] o.s.Boot - Started Travel2Controller with log4j in <*> seconds "
        "[Step <*>][Get Route By Id]"
    )
    # a hex-letter word and a C++ scope are words, not ids or addresses
    assert template_of("deadbeef accepted: std::vector a::b") == (
        "deadbeef accepted: std::vector a::b"
    )
    assert template_of('msg="cache miss" key=user:42 {"message": "user logged in"}') == (
        'msg="cache miss" key=<*> {"message": "user logged in"}'
    )


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("ERROR Connection refused to db after 3 retries", "ERROR Connection reset by db"),
        (
            "Servlet.service() threw exception [Request processing failed; nested exception is "
            "java.lang.IllegalStateException: No instances available for ts-food-service]",
            "Servlet.service() threw exception [Request processing failed; nested exception is "
            "java.lang.IllegalStateException: No instances available for ts-seat-service]",
        ),
        ("[getOrder][Order not found][OrderId: 17]", "[getOrder][Order paid][OrderId: 17]"),
        ("[getTrip][TripId: G1234]", "[getTrip][RouteId: G1234]"),
    ],
)
def test_lines_of_different_statements_keep_different_templates(one: str, other: str) -> None:
    assert template_of(one) != template_of(other)


def test_a_long_line_is_cut_where_it_keeps_the_statement() -> None:
    """Two lines of one statement whose data differ in length: cut at different places of
    their constant tail, they still share a template, of at most 300 characters."""
    tail = " then the request was retried on another replica of the service " * 40
    one = "[query][Found][ids: [" + ", ".join(["7"] * 5) + "]]" + tail
    other = "[query][Found][ids: [" + ", ".join(["12345"] * 60) + "]]" + tail
    assert template_of(one) == template_of(other)
    assert (
        len(template_of(one))
        <= MAX_TEMPLATE_CHARS
        == (LogRecord.model_fields["template"].metadata[0].max_length)
    )
    assert template_of("a\t\tb \n  c") == "a b c"
    assert template_of("") == ""


def nezha_lines(limit: int) -> list[str]:
    with NEZHA_LOG.open(newline="") as file:
        return [json.loads(row["Log"])["log"] for row in islice(csv.DictReader(file), limit)]


@pytest.mark.skipif(not NEZHA_LOG.exists(), reason=f"{NEZHA_LOG} is absent")
def test_trainticket_lines_of_one_statement_share_a_template_and_statements_stay_apart() -> None:
    """TrainTicket's Java services, as Docker wrote their lines: the ``Log`` column is the
    json-file wrapper. The statement (class and line) that wrote each line is known, so
    the templates can be scored against it."""
    templates: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for line in nezha_lines(800):
        writer = STATEMENT.search(line)
        if writer is not None:
            templates[writer.group(1)][template_of(line.rstrip("\n"))] += 1
    lines = sum(sum(counts.values()) for counts in templates.values())
    assert lines > 700 and len(templates) > 80

    # one statement, one template: its commonest template covers nearly all its lines
    in_majority = sum(counts.most_common(1)[0][1] for counts in templates.values())
    assert in_majority / lines > 0.97

    # different statements, different templates: one is shared only by statements of the
    # same class that write the same text (TravelServiceImpl logs "[Calculate distance]"
    # at four lines), and there are nearly as many templates as statements
    writers: defaultdict[str, set[str]] = defaultdict(set)
    for statement, counts in templates.items():
        for template in counts:
            writers[template].add(statement)
    assert len(writers) > 0.9 * len(templates)
    for template, statements in writers.items():
        assert len({s.split("#")[0] for s in statements}) == 1, (template, statements)
        assert len(statements) <= 4, (template, statements)
