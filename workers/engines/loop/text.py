"""Sampled tokens' bytes to text: only complete UTF-8 is released, and never past a stop string.

Pure. A token may end in the middle of a character (byte tokens, emoji split over several
tokens): those bytes wait for the rest of the character. Text that could be the beginning of a
stop string waits too, until it is known not to be one; a stop string found ends the text
before it.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence

__all__ = ["TextStream", "held_prefix_length", "token_text"]


def held_prefix_length(text: str, stops: Sequence[str]) -> int:
    """The length of the longest end of `text` that is the beginning of a stop string."""
    longest = 0
    for stop in stops:
        for length in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:length]):
                longest = length
                break
    return longest


def token_text(piece: bytes) -> str:
    """A token's text as OpenAI names it in logprobs: its text, or `bytes:\\xNN...` when its
    bytes are not complete UTF-8 on their own (part of a character)."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{byte:02x}" for byte in piece)


class TextStream:
    """One generation's text: `push` each token's bytes, then `finish`."""

    def __init__(self, stops: Sequence[str] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = [stop for stop in stops if stop]
        self._held = ""
        self.stopped = False  # a stop string was found: nothing more is released

    def push(self, piece: bytes) -> str:
        """The text this token completes that can be released now."""
        if self.stopped:
            return ""
        self._held += self._decoder.decode(piece)
        return self._release(final=False)

    def finish(self) -> str:
        """What is left at the end of the generation. The bytes of a character cut short (the
        answer ran out of tokens in its middle) are dropped: only complete UTF-8 is text."""
        if self.stopped:
            return ""
        self._decoder.reset()
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        held = self._held
        found = [index for index in (held.find(stop) for stop in self._stops) if index >= 0]
        if found:
            self.stopped, self._held = True, ""
            return held[: min(found)]
        keep = 0 if final else held_prefix_length(held, self._stops)
        self._held = held[len(held) - keep :]
        return held[: len(held) - keep]
