"""A request's sampling settings and the llama.cpp sampler chain that applies them.

The chain is llama-cpp-python 0.3.36's (`Llama._init_sampler`), so a request samples as it did
before: logit bias, repetition penalties, the grammar, then greedy (temperature 0), or top-k,
typical, top-p, min-p, temperature and a seeded draw (or mirostat). It runs in C over one row
of a decoded batch (`llama_sampler_sample`): no logits are copied into Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SamplingSpec", "build_chain", "free_chain"]

_NO_SEED = 0xFFFFFFFF  # llama.cpp's LLAMA_DEFAULT_SEED: a random seed


@dataclass(frozen=True)
class SamplingSpec:
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    mirostat_mode: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    seed: int = _NO_SEED
    penalty_last_n: int = 64
    logit_bias: tuple[tuple[int, float], ...] = ()
    grammar: str | None = None  # GBNF text, rooted at "root"
    banned: tuple[int, ...] = field(default=(), repr=False)  # e.g. end tokens, for ignore_eos

    @property
    def plain_greedy(self) -> bool:
        """Temperature 0 and nothing that changes the logits first: the top logit is the token
        (the engine loop takes it off the row itself, not through a chain that copies the
        whole vocabulary into candidates: 262,144 of them for Gemma 3)."""
        no_penalty = (self.repeat_penalty, self.frequency_penalty, self.presence_penalty) == (
            1.0,
            0.0,
            0.0,
        )
        return self.temperature == 0 and not self.logit_bias and self.grammar is None and no_penalty

    @classmethod
    def of(cls, options: Mapping[str, Any], default_seed: int, last_n: int) -> SamplingSpec:
        """From `create_completion`'s keyword arguments (llama-cpp-python's names)."""
        numbers = {
            name: options[key]
            for key, name in _OPTION_NAMES.items()
            if options.get(key) is not None
        }
        seed = options.get("seed")
        grammar = options.get("grammar")
        bias = options.get("logit_bias") or {}
        return cls(
            **numbers,
            seed=(default_seed if seed is None else int(seed)) & 0xFFFFFFFF,
            penalty_last_n=last_n,
            logit_bias=tuple((int(token), float(value)) for token, value in bias.items()),
            grammar=None if grammar is None else str(grammar._grammar),
        )


# One table, read as pairs: create_completion's keyword and the SamplingSpec field it sets.
_OPTION_NAMES = {
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "typical_p": "typical_p",
    "repeat_penalty": "repeat_penalty",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
    "mirostat_mode": "mirostat_mode",
    "mirostat_tau": "mirostat_tau",
    "mirostat_eta": "mirostat_eta",
}


def _bias(llama_cpp: Any, n_vocab: int, pairs: Iterable[tuple[int, float]]) -> Any:
    pairs = list(pairs)
    array = (llama_cpp.llama_logit_bias * len(pairs))(
        *[llama_cpp.llama_logit_bias(token, bias) for token, bias in pairs]
    )
    return llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(pairs), array)


def _draw(llama_cpp: Any, spec: SamplingSpec, n_vocab: int) -> list[Any]:
    """The samplers that pick the token, after bias, penalties and grammar."""
    if spec.temperature < 0:
        return [llama_cpp.llama_sampler_init_dist(spec.seed)]
    if spec.temperature == 0:
        return [llama_cpp.llama_sampler_init_greedy()]
    if spec.mirostat_mode == 1:
        return [
            llama_cpp.llama_sampler_init_mirostat(
                n_vocab, spec.seed, spec.mirostat_tau, spec.mirostat_eta, 100
            )
        ]
    if spec.mirostat_mode == 2:
        return [
            llama_cpp.llama_sampler_init_mirostat_v2(
                spec.seed, spec.mirostat_tau, spec.mirostat_eta
            )
        ]
    return [
        llama_cpp.llama_sampler_init_top_k(spec.top_k),
        llama_cpp.llama_sampler_init_typical(spec.typical_p, 1),
        llama_cpp.llama_sampler_init_top_p(spec.top_p, 1),
        llama_cpp.llama_sampler_init_min_p(spec.min_p, 1),
        llama_cpp.llama_sampler_init_temp(spec.temperature),
        llama_cpp.llama_sampler_init_dist(spec.seed),
    ]


def build_chain(spec: SamplingSpec, vocab: Any, n_vocab: int) -> Any:
    """A new sampler chain for one request; free it with `free_chain`. Raises ValueError when
    the grammar does not parse."""
    import llama_cpp

    samplers = []
    bias = [*spec.logit_bias, *((token, float("-inf")) for token in spec.banned)]
    if bias:
        samplers.append(_bias(llama_cpp, n_vocab, bias))
    if (spec.repeat_penalty, spec.frequency_penalty, spec.presence_penalty) != (1.0, 0.0, 0.0):
        samplers.append(
            llama_cpp.llama_sampler_init_penalties(
                n_vocab,
                spec.penalty_last_n,
                spec.repeat_penalty,
                spec.frequency_penalty,
                spec.presence_penalty,
            )
        )
    if spec.grammar is not None:
        grammar = llama_cpp.llama_sampler_init_grammar(vocab, spec.grammar.encode(), b"root")
        if not grammar:
            for sampler in samplers:
                llama_cpp.llama_sampler_free(sampler)
            raise ValueError("the grammar could not be parsed")
        samplers.append(grammar)
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    for sampler in [*samplers, *_draw(llama_cpp, spec, n_vocab)]:
        llama_cpp.llama_sampler_chain_add(chain, sampler)
    return chain


def free_chain(chain: Any) -> None:
    import llama_cpp

    if chain:
        llama_cpp.llama_sampler_free(chain)
