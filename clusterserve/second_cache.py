"""Text that changes once a second (a ``Date`` header, a log timestamp), made once a second.

A busy worker answers and logs many requests within the same second.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

Text = TypeVar("Text", str, bytes)


class SecondCache(Generic[Text]):
    def __init__(self, render: Callable[[int], Text]) -> None:
        self._render: Callable[[int], Text] = render
        self._second = -1
        self._text: Text | None = None

    def __call__(self, when: float) -> Text:
        """The text for the whole second ``when`` falls in."""
        second = int(when)
        if second != self._second or self._text is None:
            # The text first: a thread that sees the new second sees its text.
            self._text = self._render(second)
            self._second = second
        return self._text
