"""The template of a log line: its text with the variable parts masked, so that the lines
one log statement writes share one template and lines of different statements do not.

A template lets error lines be counted and quoted per statement: a new error template is
news, the thousandth copy of a known one is not. Every variable part becomes the same
placeholder, ``<*>`` (the convention of Drain and the LogPAI parsers): typed placeholders
would give one statement two templates when its slot holds a 7-digit number in one line
and an 8-digit hex id in the next.

The masks run in the order of the constants below, each on what the previous ones left;
each constant says why it exists. Every pattern starts with a character class, not with a
``\\b`` or a lookbehind (those come after the first character): the regex engine then
skips to the next candidate character instead of trying every position, which makes a
500-character line about four times cheaper to template.
"""

from __future__ import annotations

import re
from typing import Final

MAX_TEMPLATE_CHARS: Final = 300
PLACEHOLDER: Final = "<*>"
MAX_INPUT_CHARS: Final = 1000
"""Only a line's first 1000 characters are masked: the template keeps 300, and masking
costs time in proportion to the text. A cut line ends with a fragment (see ``_cut``)."""

_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*"
_TIMESTAMP = re.compile(
    r"\d(?<![\w.]\d)(?:"
    r"\d{3}-\d{2}-\d{2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2}\b)?"
    r"|\d{3}/\d{2}/\d{2}"
    r"|\d?/(?:\d{1,2}|" + _MONTH + r")/\d{2,4}(?::\d{2}:\d{2}:\d{2})?"
    r"|\d?:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|\s?[+-]\d{4}\b)?)"
)
"""1. Timestamps (ISO 8601 and RFC 3339, slashed dates, Apache's ``10/Oct/2000:13:55:36``,
clock times such as logback's ``12:00:00.123``): every line has a different one, and masked
as one unit it leaves one placeholder, not the four to seven a number mask would leave."""

_QUOTED = re.compile(r'"(?:[^"\\\n]|\\.){0,500}"|\'(?<![\w\']\')[^\'\n]{0,500}\'(?![\w\'])')
_KEPT_AFTER = ("msg=", "message=", '"msg":', '"msg": ', '"message":', '"message": ')
"""2. Quoted strings: user input, names, other systems' messages. A JSON object's keys (a
quoted string followed by ``:``; matched too, so that a key's closing quote opens nothing)
are the statement's shape and stay; so does the text of a logfmt ``msg="..."`` or a JSON
``"message": "..."``, which is the statement itself (its numbers and ids are still masked
below). An apostrophe inside a word (``don't``) opens no quote."""

_HEX = "[0-9a-fA-F]"
_IDS = re.compile(
    rf"[0-9a-fA-F@](?:"
    rf"(?<={_HEX})(?<!\w{_HEX}){_HEX}{{7}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
    rf"|(?<![\w]0)(?<=0)[xX]{_HEX}+"
    rf"|(?<=@){_HEX}{{4,}}"
    rf"|(?<!\w{_HEX})(?:(?<=\d)|(?={_HEX}*\d)){_HEX}{{7,}}"
    r")\b"
)
"""3. Ids: UUIDs (entity and request ids, masked whole so no dashes are left), hex ids of
8 or more digits (trace ids of 32, span ids of 16, commit and object hashes), ``0x``
literals and Java's ``Object@1b6d3586``. A hex id must hold a digit, so that a word made of
the letters a to f (``acceded``, ``deadbeef``) stays. One pattern with one leading
character class: the four kinds cost one scan of the line, not four."""

_IPV4 = re.compile(r"\d(?<![\w.:]\d)\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?::\d{1,5})?(?![\w.])")
_IPV6 = re.compile(
    rf"[0-9a-fA-F:](?<![\w:][0-9a-fA-F:]){_HEX}{{0,3}}(?::{_HEX}{{0,4}}){{2,7}}(?![\w:])"
)
"""4. IPv4 addresses (with a port) and IPv6 addresses: pods and clients change; before
numbers, which would leave ``<*>.<*>.<*>.<*>``. An IPv6 address must hold a digit, so that
C++'s ``std::move`` or ``a::b`` stays (checked on a match, which is rare, rather than by a
lookahead at every hex letter of the line)."""

_KEY_VALUE = re.compile(
    r"=(?<=[\w.-]=)(?<!\bmsg=)(?<!\bmessage=)(?<!\blevel=)(?<!\blvl=)(?<!\blogger=)"
    r"(?!<\*>)[^\s,;&()\[\]{}<>]+"
)
"""5. ``key=value`` values (logfmt, Lombok's ``toString``, query strings): the key names
the slot, the value fills it. The values of ``msg``, ``message``, ``level`` and ``logger``
are part of the statement and stay."""

_NUMBER = re.compile(r"\d(?:(?<![A-Za-z_]\d)\d*|\d+)(?:[.,]\d+)*")
"""6. Numbers: counts, durations, sizes, ports, a step or attempt number. A number glued to
a word is masked too (``D1345``, ``order42``), except a single digit inside a name
(``log4j``, ``Travel2Controller``, ``http2``), which names a thing. A sign stays, so
``-5`` and ``5`` are two templates: rare, and it keeps ``exec-3`` a dash and a number."""

_BRACKET = re.compile(r"\[((?:[^\[\]]|\[[^\[\]]*\])*)\]")
_OPEN_BRACKET = re.compile(r"\[((?:[^\[\]]|\[[^\[\]]*\])*)$")
_LABELLED = re.compile(r"\s*([^\W\d][\w .'-]{0,40}?\s*[:\uff1a=])\s*\S")
_DATA_SIGNS = (PLACEHOLDER, "=", ",", "[")
"""7. Bracketed data: ``[TripId: D1345]``, ``[DongCheOne, GaoTieOne]``,
``[request: Seat(travelDate=..., stations=[...])]``. What a bracket holds varies in length
(a list of 2 ids or of 9), so it becomes one placeholder once it looks like data: a
labelled value (one word, or one holding a placeholder, a list or a ``key=value``) keeps
its label (``[TripId: <*>]``: the label tells two statements of one method apart); a list
of single words or a ``key=value`` becomes ``[<*>]``. A bracket of words, masked or not
(``[getRouteByRouteId]``, ``[Get Route By Id]``, ``[Step <*>]``, a thread name
``[http-nio-<*>-exec-<*>]``, ``[Error: connection refused]``, ``[Execute Service, Get
Order]``), names the statement and stays.
Brackets holding at most one level of brackets go first, then the ones that held them. In
a line that was cut, a bracket still open where the text ends counts as closed there; in a
whole line an unclosed bracket (Tomcat's logger ``o.a.c.c.C.[.[.[/]``) is text."""

_RUNS = re.compile(r"<\*>(?:[\s,;:/.\-]*<\*>)+")
"""8. Runs of placeholders (``Sat May <*> <*> CST <*>``, an unbracketed list of numbers)
become one, so a list of 2 and a list of 9 share a template. Whitespace is then collapsed:
logback's padding (``INFO  x``) and tabs mean nothing."""


def template_of(text: str) -> str:
    """``text`` with its variable parts masked as ``<*>`` (see the module doc), whitespace
    collapsed, at most ``MAX_TEMPLATE_CHARS`` characters."""
    cut = len(text) > MAX_INPUT_CHARS
    text = text[:MAX_INPUT_CHARS]
    text = _TIMESTAMP.sub(PLACEHOLDER, text)
    text = _QUOTED.sub(_quoted, text)
    text = _IDS.sub(PLACEHOLDER, text)
    text = _IPV4.sub(PLACEHOLDER, text)
    text = _IPV6.sub(_address, text)
    text = _KEY_VALUE.sub("=" + PLACEHOLDER, text)
    text = _NUMBER.sub(PLACEHOLDER, text)
    text = _mask_brackets(text, cut)
    if cut:
        text = _cut(text)
    text = _RUNS.sub(PLACEHOLDER, text)
    return " ".join(text.split())[:MAX_TEMPLATE_CHARS]


def _address(match: re.Match[str]) -> str:
    address = match.group(0)
    return PLACEHOLDER if any(c.isdigit() for c in address) else address


def _quoted(match: re.Match[str]) -> str:
    """The quoted string, or a placeholder: see ``_QUOTED``."""
    text, start, end = match.string, match.start(), match.end()
    if text[start] == '"':
        if text[end : end + 1] == ":" or text[end : end + 2] == " :":  # a JSON key
            return match.group(0)
        if text.endswith(_KEPT_AFTER, max(0, start - 12), start):
            return match.group(0)
    return PLACEHOLDER


def _mask_brackets(text: str, cut: bool) -> str:
    for _ in range(8):  # brackets nested deeper than 16 levels are left as they are
        masked = _BRACKET.sub(_bracket, text)
        if cut and masked == text:
            masked = _OPEN_BRACKET.sub(_bracket, text)
        if masked == text:
            break
        text = masked
    return text


def _bracket(match: re.Match[str]) -> str:
    content = match.group(1)
    labelled = _LABELLED.match(content)
    if labelled:
        value = content[labelled.end(1) :].strip()
        if " " not in value or any(sign in value for sign in _DATA_SIGNS):
            return "[" + labelled.group(1) + " " + PLACEHOLDER + "]"
        return match.group(0)
    if "=" in content or (
        "," in content and all(" " not in item.strip() for item in content.split(","))
    ):
        return "[" + PLACEHOLDER + "]"
    return match.group(0)


def _cut(text: str) -> str:
    """A cut line ends in a fragment of text whose length depends on how long the variable
    parts before it were: a fragment with a word in it becomes a placeholder, so that the
    lines of one statement still share a template."""
    end = text.rfind(PLACEHOLDER) + len(PLACEHOLDER)
    if end < len(PLACEHOLDER) or not any(c.isalnum() for c in text[end:]):
        return text
    return text[:end] + " " + PLACEHOLDER
