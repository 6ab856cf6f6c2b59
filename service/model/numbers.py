"""Numbers held to the prompt while the prose is decoded: grounded by construction.

A small model copying ``2581 vs usual 160 (16.1x HIGHER)`` now and then writes ``16.0``; the
grounding guard (``service/grounding.py``) then costs a second generation. Here a number the
prose starts must stay on the way to one the prompt prints (or that number rounded, as
``6120`` for ``6120.442``, or a count up to 10, as the guard allows), and it may end only
once it is one: the tokens that would leave that path are masked, like the string's quote.
A number is what the guard reads as one: digits not glued to a word (``p95`` is a name).
"""

from __future__ import annotations

import re

import numpy as np

from service import grounding

NUMBER = re.compile(grounding.NUMBER.pattern.encode())
"""What the guard reads as a number, on the decoder's bytes."""
OPEN = re.compile(rb"(?<![\w.])\d+(?:\.\d*)?$")
"""A number the text ends in, which the next token may go on writing (``16``, ``16.``)."""


class TokenClasses:
    """A vocabulary's tokens by what they can do to a number: write digits, write a ``.``
    that may start its decimals, or neither (and so end it)."""

    def __init__(self, texts: list[bytes]) -> None:
        self.texts = texts
        digits = [any(48 <= b <= 57 for b in t) for t in texts]
        self.digits = np.flatnonzero(digits)
        dots = [t.startswith(b".") and not d for t, d in zip(texts, digits, strict=True)]
        self.dot = np.flatnonzero(dots)
        self.ending = np.ones(len(texts), dtype=bool)
        self.ending[self.digits] = self.ending[self.dot] = False


class PromptNumbers:
    """The numbers one prompt lets the prose write."""

    def __init__(self, prompt: bytes, tokens: TokenClasses) -> None:
        self.tokens = tokens
        whole = {str(i).encode() for i in range(grounding.SMALL + 1)}
        for number in NUMBER.findall(prompt):
            whole.add(number)
            if b"." in number:
                value, decimals = float(number), len(number.split(b".")[1])
                whole.update(f"{value:.{k}f}".encode() for k in range(decimals))
        self.whole = whole
        self.prefixes = {n[:i] for n in whole for i in range(1, len(n) + 1)}

    def _ends(self, number: bytes) -> bool:
        return number.removesuffix(b".") in self.whole

    def _fits(self, text: bytes, begin: int, token: int) -> bool:
        """Whether ``text`` + the token writes only numbers of the prompt, the last one maybe
        not finished yet (numbers before ``begin`` were checked when written)."""
        written = text + self.tokens.texts[token]
        tail = OPEN.search(written, begin)
        for number in NUMBER.finditer(written, begin):
            if (tail is None or number.start() != tail.start()) and number[0] not in self.whole:
                return False
        return tail is None or tail[0] in self.prefixes

    def block(self, text: bytes, blocked: np.ndarray) -> None:
        """Add to ``blocked`` the tokens that would write, after the string ``text``, a
        number the prompt does not hold; nothing if that would leave no token at all."""
        tail = OPEN.search(text)
        begin = tail.start() if tail else len(text)
        candidates = self.tokens.digits
        more = blocked.copy()
        if tail is not None:
            candidates = np.concatenate([candidates, self.tokens.dot])
            if not self._ends(tail[0]):
                more |= self.tokens.ending
        for token in candidates:
            if not more[token] and not self._fits(text, begin, int(token)):
                more[token] = True
        if not more.all():
            blocked[:] = more
