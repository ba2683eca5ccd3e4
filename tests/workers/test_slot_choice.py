"""Pure units: a request goes to the free slot whose cache most likely holds its beginning."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workers.engines.slot_choice import pick_slot, shared_length


def test_the_slot_that_last_saw_the_same_conversation_is_chosen() -> None:
    last = {0: '[{"role": "user", "content": "Hi"}]', 1: '[{"role": "user", "content": "Bye"}]'}
    follow_up = '[{"role": "user", "content": "Bye"}, {"role": "assistant", "content": "..."}]'
    assert pick_slot([0, 1, 2], last, follow_up) == 1


def test_without_a_similar_slot_the_least_recently_used_is_chosen() -> None:
    assert pick_slot([3, 0, 2], {}, "anything") == 3
    assert pick_slot([3, 0, 2], {3: "abc", 0: "abd"}, "xyz") == 3
    # Sharing only the JSON opening with a slot's conversation is no reason to take its cache.
    story = '[{"role": "user", "content": "Tell me a long story about a dragon and a knight."}]'
    other = '[{"role": "user", "content": "What is 2 + 2?"}]'
    assert pick_slot([3, 0, 2], {2: story}, other) == 3


def test_only_free_slots_are_chosen() -> None:
    assert pick_slot([0, 2], {1: "same text"}, "same text") in (0, 2)


@given(st.text(max_size=40), st.text(max_size=40))
def test_shared_length_is_the_common_prefix(a: str, b: str) -> None:
    # The reference: characters compared one by one, as os.path.commonprefix does (on strings).
    expected = next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )
    assert shared_length(a, b) == expected
