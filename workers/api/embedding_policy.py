"""What a model's embeddings may be asked for beyond text: shorter vectors (`dimensions`), and
token ids as input. Pure functions; the worker is told the model's policy at start.

- `dimensions`: a Matryoshka model (trained so a vector's first d values are themselves a
  good embedding) is shortened to d and re-normalised; any other model answers 400, since a
  cut vector of another model is no embedding at all. Never another size than asked.
- Token ids: LangChain's OpenAIEmbeddings sends cl100k_base (OpenAI's) token ids by default;
  this model would read them as its own and embed other text, with a 200. Unless the model
  says ids are welcome (`accept_token_ids`), they are a 400 that names LangChain's setting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from workers.errors import invalid_request

__all__ = ["EmbeddingPolicy"]


@dataclass(frozen=True)
class EmbeddingPolicy:
    matryoshka: bool = False  # its vectors may be shortened (dimensions)
    accept_token_ids: bool = False  # token-id input is this model's own token ids

    def check_input(self, inputs: list[str] | list[list[int]]) -> None:
        """400 for token ids the model was not told to take."""
        if inputs and isinstance(inputs[0], list) and not self.accept_token_ids:
            raise invalid_request(
                "This model takes text, not token ids: ids from another tokenizer would embed "
                "other text. LangChain's OpenAIEmbeddings sends OpenAI's token ids unless "
                "check_embedding_ctx_length=False; or set accept_token_ids: true for this "
                "model if the ids are its own.",
                "input",
            )

    def fit(self, vectors: list[list[float]], dimensions: int | None) -> list[list[float]]:
        """The vectors at `dimensions` values each (None: as they are); 400 if they cannot be."""
        if dimensions is None or not vectors or dimensions == len(vectors[0]):
            return vectors
        size = len(vectors[0])
        if not self.matryoshka:
            raise invalid_request(
                f"This model's embeddings have {size} dimensions and cannot be shortened "
                "(set matryoshka: true for a model trained for it); omit 'dimensions' or "
                f"ask for {size}.",
                "dimensions",
            )
        if dimensions > size:
            raise invalid_request(
                f"'dimensions' is {dimensions}, but this model's embeddings have {size}.",
                "dimensions",
            )
        return [_unit(vector[:dimensions]) for vector in vectors]


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]
