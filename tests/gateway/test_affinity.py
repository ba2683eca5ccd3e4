"""Cache-affinity routing: prompt block hashes, the per-replica table, and the scheduler."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from gateway.http.auth import ANONYMOUS
from gateway.pool.affinity import BLOCK_CHARS, PrefixTable, prefix_hashes, prompt_text
from gateway.pool.scheduler import QueuePolicy, Scheduler
from gateway.replicas.registry import Registry

SYSTEM = {"role": "system", "content": "You are terse. " * 40}


def turns(n: int, who: str = "a") -> list[dict[str, str]]:
    """A conversation's messages after n exchanges."""
    out = [SYSTEM]
    for i in range(n):
        out += [
            {"role": "user", "content": f"{who} question {i} " * 30},
            {"role": "assistant", "content": f"{who} answer {i} " * 30},
        ]
    return out


def test_the_next_turn_shares_every_block_of_the_previous_one() -> None:
    before = prefix_hashes(prompt_text({"messages": turns(2)}))
    after = prefix_hashes(prompt_text({"messages": turns(3)}))
    assert len(after) > len(before) >= 2
    assert after[: len(before)] == before


def test_a_block_s_hash_covers_everything_before_it() -> None:
    text = "x" * (4 * BLOCK_CHARS)
    changed = "y" + text[1:]
    assert len(prefix_hashes(text)) == 4
    assert not set(prefix_hashes(text)) & set(prefix_hashes(changed))
    assert prefix_hashes(text[: 3 * BLOCK_CHARS + 10]) == prefix_hashes(text)[:3]  # whole blocks


def test_prompt_text_reads_chat_completions_and_responses_bodies() -> None:
    assert prompt_text({"prompt": "once upon"}) == "once upon"
    chat = prompt_text({"messages": [{"role": "user", "content": "hi"}]})
    assert "user" in chat and "hi" in chat
    responses = prompt_text({"instructions": "be brief", "input": "hi"})
    assert responses.startswith("be brief") and responses.endswith("hi")
    parts = prompt_text(
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}]}
    )
    assert '"text": "a"' in parts


@dataclass
class Fake:
    api: str
    in_flight: int = 0
    capacity: int = 1


def test_the_replica_holding_most_of_the_prompt_wins_until_its_load_outweighs_it() -> None:
    table = PrefixTable()
    a, b = Fake("a", capacity=4), Fake("b", capacity=4, in_flight=3)
    conversation = prefix_hashes(prompt_text({"messages": turns(3)}))
    table.record("b", conversation[:-2])  # b served the turn before
    assert table.matched("b", conversation) == len(conversation) - 2
    assert table.pick([a, b], conversation) is b  # busier, but holds most of the prompt
    table.forget("b")
    table.record("b", conversation[:1])  # only the first block (a shared system prompt)
    b.in_flight = 1
    assert table.pick([a, b], conversation) is a  # a quarter full outweighs one block in 11


def test_without_a_match_it_is_least_busy_first_on_ties() -> None:
    table = PrefixTable()
    a, b = Fake("a", in_flight=1, capacity=2), Fake("b", capacity=2)
    assert table.pick([a, b], prefix_hashes("z" * 1000)) is b
    assert table.pick([Fake("c"), Fake("d")], prefix_hashes("z" * 1000)).api == "c"
    assert table.pick([a, b], []) is b
    assert table.pick([], []) is None


def test_each_replica_keeps_only_its_latest_blocks() -> None:
    table = PrefixTable(per_replica=4)
    old, new = prefix_hashes("o" * 4 * BLOCK_CHARS), prefix_hashes("n" * 4 * BLOCK_CHARS)
    table.record("a", old)
    table.record("a", new)
    assert table.matched("a", old) == 0 and table.matched("a", new) == 4
    table.forget("a")
    assert table.matched("a", new) == 0


def affinity_scheduler() -> Scheduler:
    """Two ready replicas of model "m" (each at its own address), routed by prefix."""
    registry = Registry()
    registry.add_model("m")
    for index in range(2):
        replica = registry.add_replica("m", index, "cpu")
        registry.mark_starting(replica, pid=1, port=9000 + index)
        registry.mark_ready(replica)
    return Scheduler(registry, {"m": QueuePolicy(8, 5.0, affinity=True)})


async def test_the_scheduler_sends_a_conversation_back_where_it_was_served() -> None:
    scheduler = affinity_scheduler()
    other = scheduler.try_acquire("m", ANONYMOUS)  # replica 0 busy: the conversation starts on 1
    assert other is not None and other.replica.index == 0
    first = await scheduler.acquire(
        "m", ANONYMOUS, prefix=prefix_hashes(prompt_text({"messages": turns(1)}))
    )
    assert first.replica.index == 1
    first.release()
    other.release()
    for n in range(2, 5):  # both free: least-busy would pick replica 0; the prefix is on 1
        lease = await scheduler.acquire(
            "m", ANONYMOUS, prefix=prefix_hashes(prompt_text({"messages": turns(n)}))
        )
        assert lease.replica.index == 1
        lease.release()
    fresh = scheduler.try_acquire(
        "m", ANONYMOUS, prefix_hashes(prompt_text({"messages": turns(2, who="b")}))
    )
    assert fresh is not None and fresh.replica.index == 1  # shares the system prompt's blocks
    fresh.release()


async def test_a_queued_request_s_prefix_is_recorded_where_it_was_dispatched() -> None:
    scheduler = affinity_scheduler()
    held = [scheduler.try_acquire("m", ANONYMOUS) for _ in range(2)]
    assert [lease.replica.index for lease in held if lease] == [0, 1]
    conversation = prefix_hashes(prompt_text({"messages": turns(2)}))
    waiting = asyncio.ensure_future(scheduler.acquire("m", ANONYMOUS, prefix=conversation))
    await asyncio.sleep(0)
    held[1].release()  # type: ignore[union-attr]  # the first replica free takes it
    served = await waiting
    assert served.replica.index == 1
    served.release()
    held[0].release()  # type: ignore[union-attr]
    follow_up = prefix_hashes(prompt_text({"messages": turns(3)}))
    lease = scheduler.try_acquire("m", ANONYMOUS, follow_up)
    assert lease is not None and lease.replica.index == 1  # both free: where its prefix is
