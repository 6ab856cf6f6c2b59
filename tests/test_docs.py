"""The documentation a clone gets: its links lead somewhere, and its files speak of the product.

Why: a reader follows a link from the README into docs/ and expects the file to be there
in their clone, not in a folder beside the author's checkout. And the repository is read by
users: comments, docstrings, tests and data describe what the code does and why, not the
calendar of the work that produced it (numbered work items, work periods, who owns a
target). Both are checked over the files git tracks; nothing here needs the model, the
broker or the database.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LINKED_DOCS = ("README.md", "CONTRIBUTING.md", "CHANGELOG.md", "docs/*.md")

# [text](target) and ![alt](target); a target may carry a "title" after a space.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)  # http:, mailto:, //host

# Wording about how the work was organised, case-insensitive. Each pattern is narrow on
# purpose: "session" alone is an HTTP or pytest session, "owner" a shard or a team that an
# action pages, "issue" a problem; only the phrasings below are about the work itself.
WORK_WORDING = {
    "a numbered stop": r"\bstops?[- ]\d+\b",
    "stops before or after": r"\b(?:earlier|previous|later|next) stops\b",
    "a numbered issue": r"\bissues? #?\d+",
    "the issue as a brief": r"\(issue\)|\bthe issue (?:prescribes|rules|asks|requires|says|sets)\b",
    "a work session": (
        r"\b(?:this|that|earlier|later|previous|next|second|first|last|same|another|one)"
        r" sessions?\b(?!\s*(?:cookie|id|token|store|key|state|object|scope)\b)"
    ),
    "what a work period produced": r"\bsession's\b",
    "who owns a target": (
        r"\bwhoever owns\b|\bowns? (?:the|this|that) (?:target|issue|task)\b"
        r"|\b(?:target|task|issue) owners?\b|\bowners? of (?:the|this|a) (?:target|task|issue)\b"
    ),
}

# Files checked for wording but where a match is legitimate, each with its reason. Keep
# this short: fix the wording instead where it can be fixed.
ALLOWED: dict[str, set[str]] = {}

BINARY_SUFFIXES = {".png", ".gguf", ".jpg", ".jpeg", ".gif", ".ico", ".pdf", ".gz", ".zip"}


def tracked_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    return [name for name in listed.split("\0") if name]


def text_of(name: str) -> str | None:
    """The file's text, or None for a binary file (or one deleted in the working tree)."""
    path = ROOT / name
    if path.suffix.lower() in BINARY_SUFFIXES or not path.is_file():
        return None
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None
    return data.decode("utf-8", errors="replace")


def linked_docs() -> list[Path]:
    found = {path for pattern in LINKED_DOCS for path in ROOT.glob(pattern)}
    return sorted(found)


def broken_links(doc: Path) -> list[str]:
    """Relative links of ``doc`` that do not lead to a file or folder inside the repository."""
    broken = []
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.DOTALL)  # code is not links
    for target in LINK.findall(text):
        if EXTERNAL.match(target) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0]
        resolved = (doc.parent / path).resolve()
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(target)
    return broken


def test_the_documents_with_links_are_there() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in linked_docs()}
    assert {"README.md", "CONTRIBUTING.md", "CHANGELOG.md", "docs/architecture.md"} <= names


@pytest.mark.parametrize("doc", linked_docs(), ids=lambda path: path.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves_inside_the_repository(doc: Path) -> None:
    assert broken_links(doc) == []


def test_a_link_outside_the_repository_is_reported(tmp_path: Path) -> None:
    doc = ROOT / "docs" / "architecture.md"
    text = doc.read_text()
    assert broken_links(doc) == []
    stray = tmp_path / "x.md"
    stray.write_text(text + "\n[design](../shared/DESIGN.md) [here](#top) [web](https://x.org)\n")
    # Resolved from tmp_path, every repository link breaks too; the external ones never do.
    assert "../shared/DESIGN.md" in broken_links(stray)
    assert "#top" not in broken_links(stray)
    assert "https://x.org" not in broken_links(stray)


def work_wording(text: str, allowed: set[str]) -> list[str]:
    """``line: phrase (what it is)`` for each line of ``text`` that speaks of the work."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for label, pattern in WORK_WORDING.items():
            if label in allowed:
                continue
            match = re.search(pattern, line, re.IGNORECASE)
            if match:
                found.append(f"{number}: {match.group(0)!r} ({label})")
    return found


def test_no_tracked_file_speaks_of_how_the_work_was_organised() -> None:
    offending = {}
    for name in tracked_files():
        text = text_of(name)
        if text is None:
            continue
        hits = work_wording(text, ALLOWED.get(name, set()))
        if hits:
            offending[name] = hits[:5]
    assert offending == {}


# Lines the check must catch, each split in two where its wording is, so that this file
# itself speaks of the product only: (head, tail), joined as they are.
CAUGHT = [
    ("the st", "op-20 adapter"),
    ("St", "op 23: a per-cause bias"),
    ("README with this sess", "ion's figures"),
    ("three bench runs this sess", "ion"),
    ("in a later sess", "ion the same day"),
    ("with the library the iss", "ue prescribes"),
    ("Targets (iss", "ue): >= 1,000,000 observations/s"),
    ("Hostile input (iss", "ue 8): any file"),
    ("the target needs restating by whoever ow", "ns it"),
]


@pytest.mark.parametrize("line", ["".join(parts) for parts in CAUGHT])
def test_work_wording_is_caught(line: str) -> None:
    assert work_wording(line, set()) != []


@pytest.mark.parametrize(
    "line",
    [
        '@pytest.fixture(scope="session")',
        "Shared, expensive parts of the training tests: made once per session.",
        "with requests.Session() as session:",
        "link shared on social media: 12% of sessions are new visitors",
        "GET /sessions/{id} on session-store",
        "ownerReferences: the owner of the pod is the StatefulSet",
        'Page the "checkout" owners',
        "a known issue of pika: the connection stops after 2 heartbeats",
        "SIGTERM stops the consumer; stop the broker",
    ],
)
def test_technical_words_are_not_caught(line: str) -> None:
    assert work_wording(line, set()) == []
