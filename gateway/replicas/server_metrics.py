"""llama-server's own `/metrics` (Prometheus text) read into our engine counters, so a replica
of either engine exports the same per-replica series (gateway/observe/metrics.py).

Ours count decode steps, the slots they served, tokens decoded and generated, and time in
`llama_decode`. llama-server counts `llama_decode` calls, the mean busy slots per call, prompt
tokens evaluated (cached ones excluded) and tokens generated, and each slot's prompt and
generation time: summed over slots that decode together, so the time is divided by the mean
busy slots per call to estimate the time decoding.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["engine_counters"]

_PREFIX = "llamacpp:"


def engine_counters(text: str) -> dict[str, float]:
    """Our counters from llama-server's metrics `text`; those it lacks are left out."""
    found = dict(_samples(text))
    steps, busy = found.get("n_decode_total"), found.get("n_busy_slots_per_decode")
    prompt, generated = found.get("prompt_tokens_total"), found.get("tokens_predicted_total")
    reading = found.get("prompt_seconds_total")
    writing = found.get("tokens_predicted_seconds_total")
    counters: dict[str, float | None] = {
        "steps": steps,
        "sequences": None if steps is None or busy is None else round(steps * busy),
        "generated_tokens": generated,
        "decoded_tokens": None if prompt is None or generated is None else prompt + generated,
        "decode_seconds": None
        if reading is None or writing is None
        else (reading + writing) / max(busy or 1.0, 1.0),
    }
    return {key: float(value) for key, value in counters.items() if value is not None}


def _samples(text: str) -> Iterator[tuple[str, float]]:
    """(name without `llamacpp:`, value) of each unlabelled llama-server sample in `text`."""
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if not name.startswith(_PREFIX):
            continue
        try:
            yield name[len(_PREFIX) :], float(value.split()[0])
        except (ValueError, IndexError):
            continue
