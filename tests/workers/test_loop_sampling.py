"""Units: a request's sampling settings, and when the top logit alone is the token."""

from __future__ import annotations

from workers.engines.loop.sampling import SamplingSpec


def spec(**options: object) -> SamplingSpec:
    return SamplingSpec.of(options, default_seed=7, last_n=64)


def test_llama_cpp_python_names_become_the_spec_and_the_seed_defaults_to_the_models() -> None:
    made = spec(temperature=0.5, top_k=10, logit_bias={"5": -3}, seed=None)
    assert (made.temperature, made.top_k, made.seed) == (0.5, 10, 7)
    assert made.logit_bias == ((5, -3.0),)
    assert spec(seed=-1).seed == 0xFFFFFFFF  # OpenAI's int64, as llama.cpp's uint32


def test_only_temperature_zero_with_nothing_else_on_the_logits_is_plain_greedy() -> None:
    assert spec(temperature=0).plain_greedy
    assert not spec().plain_greedy  # llama-cpp-python's default temperature is 0.8
    assert not spec(temperature=0, logit_bias={"5": 1}).plain_greedy
    assert not spec(temperature=0, presence_penalty=0.5).plain_greedy
    assert not spec(temperature=0, repeat_penalty=1.1).plain_greedy
