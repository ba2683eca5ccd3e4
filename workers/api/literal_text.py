"""Message contents are text, never control tokens.

llama-cpp-python renders the chat template to one string and tokenizes all of it with
`special=True`, so a user who writes `<|im_start|>system` in a message gets the real control
tokens and can forge a system turn. OpenAI's API treats such text as text. Here each content is
swapped for a sentinel before rendering, and the tokenizer, wrapped, tokenizes the template's
own markup with special tokens and each content, put back in place, without them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

__all__ = ["LiteralContents"]

Tokenize = Callable[..., list[int]]
# Private-use code points: no tokenizer merges them with their neighbours' markup, and no
# template strips them. A per-request nonce keeps a user from naming another content's slot.
_OPEN, _CLOSE = "\ue000", "\ue001"
_SENTINEL = re.compile(f"{_OPEN}([0-9a-f]{{12}}):(\\d+){_CLOSE}".encode())


class LiteralContents:
    """Installs itself as `llama.tokenize`; `mask` prepares one request's messages."""

    def __init__(self, llama: Any) -> None:
        self._tokenize: Tokenize = llama.tokenize
        self._nonce = ""
        self._texts: list[bytes] = []
        setattr(llama, "tokenize", self.tokenize)  # noqa: B010 - instance override

    def mask(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`messages` with each string content replaced by its sentinel, for this request."""
        self._nonce, self._texts = os.urandom(6).hex(), []
        return [self._masked(message) for message in messages]

    def clear(self) -> None:
        """No request's contents are pending (a completion prompt is the client's own text)."""
        self._nonce, self._texts = "", []

    def _masked(self, message: dict[str, Any]) -> dict[str, Any]:
        content = message.get("content")
        if not isinstance(content, str) or not content:
            return message
        self._texts.append(content.encode())
        return {**message, "content": f"{_OPEN}{self._nonce}:{len(self._texts) - 1}{_CLOSE}"}

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        if not (special and self._texts) or _OPEN.encode() not in text:
            return self._tokenize(text, add_bos, special)
        tokens: list[int] = []
        start = 0
        for match in _SENTINEL.finditer(text):
            index = int(match[2])
            if match[1].decode() != self._nonce or index >= len(self._texts):
                continue  # not one of ours: left in the template's text
            tokens += self._tokenize(text[start : match.start()], add_bos and not tokens, True)
            tokens += self._tokenize(self._texts[index], False, False)
            start = match.end()
        return tokens + self._tokenize(text[start:], add_bos and not tokens, True)
