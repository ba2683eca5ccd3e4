"""Pure units: what one decode step of the engine loop takes from each active request."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workers.engines.loop.plan import plan_step


def test_generating_slots_go_first_and_prompts_fill_the_rest_in_arrival_order() -> None:
    plan = plan_step([300, 0, 0, 400], budget=256, generating=[False, True, True, False])
    assert plan == [254, 1, 1, 0]


def test_a_long_prompt_is_ingested_in_chunks_beside_the_generating_slots() -> None:
    remaining, steps = [1000, 0], 0
    while remaining[0] > 0:
        plan = plan_step(remaining, budget=128, generating=[False, True])
        assert plan[1] == 1  # the generating slot's next token is in every step
        remaining[0] -= plan[0]
        steps += 1
    assert steps == 8  # 127 prompt tokens a step


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=2000), st.booleans()), min_size=1, max_size=16
    ),
    st.integers(min_value=16, max_value=2048),
)
def test_a_step_never_overfills_never_takes_more_than_left_and_always_progresses(
    jobs: list[tuple[int, bool]], budget: int
) -> None:
    jobs = [(left if not busy else 0, busy or left == 0) for left, busy in jobs]
    remaining, generating = [left for left, _ in jobs], [busy for _, busy in jobs]
    plan = plan_step(remaining, budget, generating)
    assert sum(plan) <= budget
    assert all(took == 1 for took, busy in zip(plan, generating, strict=True) if busy)
    assert all(
        0 <= took <= left
        for took, left, busy in zip(plan, remaining, generating, strict=True)
        if not busy
    )
    assert sum(plan) > 0
