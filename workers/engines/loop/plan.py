"""What goes into the next decode step: pure, so the engine loop's order is tested alone."""

from __future__ import annotations

__all__ = ["plan_step"]


def plan_step(remaining: list[int], budget: int, generating: list[bool]) -> list[int]:
    """How many tokens of each active request (in arrival order) go into the next batch of at
    most `budget`: each generating request's one next token first, then prompt chunks in
    arrival order, so a long prompt is read over several steps and never stalls the others'
    next token. `remaining` is each request's prompt tokens left (ignored when generating)."""
    plan = [1 if busy else 0 for busy in generating]
    room = budget - sum(plan)
    for index, left in enumerate(remaining):
        if not generating[index] and left > 0 and room > 0:
            plan[index] = min(left, room)
            room -= plan[index]
    return plan
