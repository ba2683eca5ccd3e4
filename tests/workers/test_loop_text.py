"""Pure units: sampled tokens' bytes become text only as complete UTF-8, never past a stop."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workers.api.logprobs import token_bytes
from workers.engines.loop.text import TextStream, held_prefix_length, token_text


def feed(stream: TextStream, pieces: list[bytes]) -> list[str]:
    return [stream.push(piece) for piece in pieces] + [stream.finish()]


def test_a_character_split_over_tokens_is_released_whole_when_complete() -> None:
    star = "🌟".encode()
    assert feed(TextStream(), [star[:2], star[2:3], star[3:], b"!"]) == ["", "", "🌟", "!", ""]


def test_a_character_cut_short_at_the_end_is_dropped_not_replaced() -> None:
    assert "".join(feed(TextStream(), [b"ok ", "🌟".encode()[:2]])) == "ok "


def test_text_that_may_begin_a_stop_string_waits_and_the_stop_ends_the_text() -> None:
    stream = TextStream(["END"])
    assert [stream.push(p) for p in [b"one E", b"N", b"D two"]] == ["one ", "", ""]
    assert stream.stopped and stream.finish() == ""


def test_text_held_for_a_stop_that_never_comes_is_released() -> None:
    stream = TextStream(["END"])
    assert [stream.push(p) for p in [b"one E", b"ND", b"x"]][:1] == ["one "]
    stream = TextStream(["END"])
    assert "".join([stream.push(b"one EN"), stream.push(b"o"), stream.finish()]) == "one ENo"


def test_the_earliest_of_several_stop_strings_wins() -> None:
    stream = TextStream(["b", "a"])
    assert stream.push(b"xxab") == "xx" and stream.stopped


@given(st.text(max_size=40), st.lists(st.integers(min_value=1, max_value=5), max_size=40))
def test_any_split_of_any_text_gives_back_the_text(text: str, cuts: list[int]) -> None:
    data, pieces, at = text.encode(), [], 0
    for cut in cuts:
        pieces.append(data[at : at + cut])
        at += cut
    pieces.append(data[at:])
    assert "".join(feed(TextStream(), pieces)) == text


@given(st.text(alphabet="abc", max_size=30), st.text(alphabet="abc", min_size=1, max_size=4))
def test_stops_cut_exactly_where_the_first_stop_begins(text: str, stop: str) -> None:
    stream = TextStream([stop])
    released = "".join(stream.push(ch.encode()) for ch in text) + stream.finish()
    assert released == (text[: text.find(stop)] if stop in text else text)


def test_held_prefix_is_the_longest_end_that_begins_a_stop() -> None:
    assert held_prefix_length("hello wor", ["world", "or"]) == 3
    assert held_prefix_length("abc", ["x"]) == 0


def test_a_token_that_is_part_of_a_character_is_named_by_its_bytes_and_read_back() -> None:
    part = "🌟".encode()[:2]
    assert token_text(part) == "bytes:\\xf0\\x9f"
    assert token_bytes(token_text(part)) == [0xF0, 0x9F]
    assert token_bytes(token_text(b" hi")) == list(b" hi")
