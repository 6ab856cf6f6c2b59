"""The service catalogue: what the operators know about their services, for the prompt.

Some diagnoses need a trait no signal shows: exchange-api is CPU-bound, so idle CPU means it
waits; email-worker's latency includes queue wait. Operators write such notes once, one per
service, in a TOML file (``WHYSLOW_CATALOGUE``), and the prompt quotes the note of the
report's service::

    exchange-api = "CPU-bound: computes quotes in process, so idle CPU means it waits"
    email-worker = "its latency includes the time a message waits in the emails queue"
"""

from __future__ import annotations

import tomllib
from pathlib import Path

MAX_NOTE_CHARS = 300
"""A note is a trait in a sentence, not a runbook: longer ones are refused."""


class CatalogueError(ValueError):
    """A catalogue file that cannot be used; the message names the file and the entry."""


class Catalogue:
    """Notes by service name; an empty catalogue has none."""

    def __init__(self, notes: dict[str, str] | None = None) -> None:
        self._notes = dict(notes or {})

    @classmethod
    def load(cls, path: Path | None) -> Catalogue:
        """The catalogue in ``path`` (none: an empty one). Raises CatalogueError."""
        if path is None:
            return cls()
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise CatalogueError(f"service catalogue {path}: {exc.strerror or exc}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise CatalogueError(f"service catalogue {path}: not TOML: {exc}") from exc
        for service, note in table.items():
            if not isinstance(note, str):
                raise CatalogueError(
                    f"service catalogue {path}: {service!r} must be a string, not "
                    f'{type(note).__name__} (e.g. {service} = "CPU-bound")'
                )
            if not note.strip():
                raise CatalogueError(f"service catalogue {path}: the note of {service!r} is empty")
            if len(note) > MAX_NOTE_CHARS:
                raise CatalogueError(
                    f"service catalogue {path}: the note of {service!r} has {len(note)} "
                    f"characters, more than {MAX_NOTE_CHARS}"
                )
        return cls({service: note.strip() for service, note in table.items()})

    def note(self, service: str) -> str | None:
        return self._notes.get(service)

    def __len__(self) -> int:
        return len(self._notes)
