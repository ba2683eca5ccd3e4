"""Pure units: what one decode step of a batching worker takes from each pending request."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workers.batch_decoder import plan_step


def test_generating_slots_go_first_and_prompts_fill_the_rest_in_arrival_order() -> None:
    assert plan_step([300, 1, 1, 400], budget=256) == [254, 1, 1, 0]


def test_a_long_prompt_is_ingested_in_chunks_beside_the_generating_slots() -> None:
    remaining, steps = [1000, 1], 0
    while remaining[0] > 0:
        plan = plan_step(remaining, budget=128)
        assert plan[1] == 1  # the generating slot's next token is in every step
        remaining[0] -= plan[0]
        steps += 1
    assert steps == 8  # 127 prompt tokens a step


@given(st.lists(st.integers(min_value=1, max_value=2000), min_size=1, max_size=16),
       st.integers(min_value=16, max_value=2048))  # fmt: skip
def test_a_step_never_overfills_never_takes_more_than_left_and_always_progresses(
    remaining: list[int], budget: int
) -> None:
    plan = plan_step(remaining, budget)
    assert sum(plan) <= budget
    assert all(0 <= took <= left for took, left in zip(plan, remaining, strict=True))
    assert sum(plan) > 0
    assert all(took == 1 for took, left in zip(plan, remaining, strict=True) if left == 1)
