"""Cache keys, request policy, the lexical guard and the partitioned index (no services)."""

from __future__ import annotations

import gc
import json

import numpy as np
import pytest

from inferq.cache.guard import compatible
from inferq.cache.index import IndexedEntry, SemanticIndex
from inferq.cache.keys import build_scope
from inferq.cache.policy import policy_of
from inferq.errors import InvalidValue
from inferq.queue.events import decode_event, dump_event
from inferq.settings import Settings

PARAMS = {"max_tokens": 8, "temperature": 0.0, "top_p": 0.95, "stop": None, "seed": 1}


def test_every_scope_part_changes_the_exact_key() -> None:
    base = build_scope("a", "echo", "hi there", None, PARAMS)
    assert (
        base.exact_digest == build_scope("a", "echo", "hi there", None, dict(PARAMS)).exact_digest
    )
    others = [
        build_scope("b", "echo", "hi there", None, PARAMS),
        build_scope("a", "gemma-3-270m", "hi there", None, PARAMS),
        build_scope("a", "echo", "hi there ", None, PARAMS),
        build_scope("a", "echo", "hi there", None, {**PARAMS, "temperature": 0.5}),
        build_scope("a", "echo", "hi there", None, {**PARAMS, "stop": ["x"]}),
        build_scope("a", "echo", "hi there", None, {**PARAMS, "choice_index": 1}),
    ]
    assert len({base.answer_key, *(s.answer_key for s in others)}) == 1 + len(others)
    # The key names its tenant and model in quoted segments: no value breaks out of them.
    evil = build_scope("a:*", "echo", "hi", None, PARAMS)
    assert evil.answer_key.startswith("inferq:cache:l1:a%3A%2A:echo:")


def test_unicode_and_line_ends_are_normalized() -> None:
    composed = build_scope("a", "echo", "caf\u00e9\r\nok", None, PARAMS)
    decomposed = build_scope("a", "echo", "cafe\u0301\nok", None, PARAMS)
    assert composed.answer_key == decomposed.answer_key


def test_chat_scope_embeds_the_last_user_turn_and_hashes_the_rest() -> None:
    system = {"role": "system", "content": "Be brief."}
    one = build_scope("a", "echo", None, [system, {"role": "user", "content": "Hi?"}], PARAMS)
    other_system = {"role": "system", "content": "Be long."}
    two = build_scope("a", "echo", None, [other_system, {"role": "user", "content": "Hi?"}], PARAMS)
    assert one.semantic_text == "Hi?"
    assert one.context_hash != two.context_hash and one.partition != two.partition
    last_assistant = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Yo"}]
    assert build_scope("a", "echo", None, last_assistant, PARAMS).semantic_text is None


def test_cache_control_and_body_mode() -> None:
    s = Settings()
    default = policy_of(s, None, None, None)
    assert default.lookup_exact and default.lookup_semantic and default.store_semantic
    assert default.ttl_s == s.cache_ttl_s == 86400
    no_cache = policy_of(s, None, None, "no-cache")
    assert not no_cache.lookup_exact and not no_cache.lookup_semantic and no_cache.store_exact
    no_store = policy_of(s, None, None, "max-age=0, No-Store")
    assert no_store.lookup_exact and not no_store.store_exact and not no_store.store_semantic
    exact = policy_of(s, "exact", 5, None)
    assert exact.lookup_exact and not exact.lookup_semantic and exact.ttl_s == 5
    assert not policy_of(s, "off", None, None).active
    with pytest.raises(InvalidValue):
        policy_of(s, None, s.cache_max_ttl_s + 1, None)


@pytest.mark.parametrize(
    ("query", "stored", "same"),
    [
        ("Which city is the capital of France?", "What is the capital of France?", True),
        ("What is the capital of Germany?", "What is the capital of France?", False),
        ("Convert 5 miles to kilometers.", "Convert 5 kilometers to miles.", False),
        ("How do I turn notifications off?", "How do I turn notifications on?", False),
        ("How do I disable two-factor authentication?", "How do I enable 2FA?", False),
        ("Solve 2x - 3 = 7.", "Solve 2x + 3 = 7.", False),
        ("Who won the World Cup in 2014?", "Who won the World Cup in 2018?", False),
    ],
)
def test_guard(query: str, stored: str, same: bool) -> None:
    assert compatible(query, stored) is same


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return v / np.linalg.norm(v)


def test_index_never_searches_another_partition() -> None:
    index = SemanticIndex()
    vector = _unit(1)
    a = ("tenant-a", "echo", "ctx", "params")
    b = ("tenant-b", "echo", "ctx", "params")
    index.add(a, IndexedEntry("e1", "key-a", 2e9, "p"), vector)
    match = index.search(a, vector, 0.99)
    assert match is not None and match.entry.id == "e1" and match.similarity > 0.999
    assert index.search(b, vector, 0.0) is None  # the identical vector, another tenant
    assert index.search(a, _unit(2), 0.5) is None  # below the threshold


def test_index_grows_skips_expired_and_purges() -> None:
    index = SemanticIndex()
    key = ("t", "m", "c", "p")
    for i in range(100):
        index.add(key, IndexedEntry(f"e{i}", f"k{i}", 2e9, "p"), _unit(i))
    assert len(index) == 100 and not index.add(key, IndexedEntry("e5", "k", 2e9, "p"), _unit(5))
    index.add(key, IndexedEntry("old", "k-old", 10.0, "p"), _unit(1000))
    assert index.search(key, _unit(1000), 0.9, now=20.0) is None  # expired
    found = index.search(key, _unit(42), 0.9)
    assert found is not None and found.entry.id == "e42"
    index.remove("e42")
    assert index.search(key, _unit(42), 0.9) is None
    assert index.purge("t", None) == 100 and len(index) == 0


def test_index_removal_tombstones_then_compacts() -> None:
    index = SemanticIndex()
    key = ("t", "m", "c", "p")
    for i in range(100):
        index.add(key, IndexedEntry(f"e{i}", f"k{i}", 2e9, "p"), _unit(i))
    for i in range(60):  # past half: the partition compacts to the 40 live rows
        index.remove(f"e{i}")
        assert index.search(key, _unit(i), 0.9) is None
    assert len(index) == 40 and index.count("t") == 40
    for i in range(60, 100):
        found = index.search(key, _unit(i), 0.9)
        assert found is not None and found.entry.id == f"e{i}"


def _clustered(n: int, seed: int = 3) -> np.ndarray:
    """Unit vectors around 20 centres, as real prompts cluster by topic."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, 384)).astype(np.float32)
    out = centres[rng.integers(0, 20, n)] + 0.08 * rng.standard_normal((n, 384))
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def test_a_partition_past_exact_max_is_searched_by_cells_and_misses_nothing_of_its_own() -> None:
    index = SemanticIndex(exact_max=200, probes=2)
    key, other = ("t", "m", "c", "p"), ("u", "m", "c", "p")
    vectors = _clustered(600)
    for i, vector in enumerate(vectors):
        index.add(key, IndexedEntry(f"e{i}", f"k{i}", 2e9, "p"), vector)
    index.add(other, IndexedEntry("theirs", "k", 2e9, "p"), vectors[0])
    assert index.is_probed(key) and not index.is_probed(other)  # trained inline: no loop
    for i, vector in enumerate(vectors):  # a vector lives in its nearest centroid's cell
        found = index.search(key, vector, 0.999)
        assert found is not None and found.entry.id == f"e{i}"
    index.remove("e7")
    assert index.search(key, vectors[7], 0.999) is None and index.count("t") == 599
    late = _unit(99)  # an add after training goes to its nearest cell
    index.add(key, IndexedEntry("late", "k", 2e9, "p"), late)
    found = index.search(key, late, 0.999)
    assert found is not None and found.entry.id == "late"
    assert index.purge("t", None) == 600 and index.search(other, vectors[0], 0.999) is not None


async def test_changes_during_a_training_are_replayed_onto_the_cells() -> None:
    index = SemanticIndex(exact_max=300, probes=2)
    key = ("t", "m", "c", "p")
    vectors = _clustered(700)
    for i in range(301):  # the 301st add starts a training in a thread
        index.add(key, IndexedEntry(f"e{i}", f"k{i}", 2e9, "p"), vectors[i])
    assert not index.is_probed(key)
    for i in range(301, 400):  # while it trains: more adds, and removals of trained rows
        index.add(key, IndexedEntry(f"e{i}", f"k{i}", 2e9, "p"), vectors[i])
    for i in range(0, 300, 3):
        index.remove(f"e{i}")
    await index.settle()
    assert index.is_probed(key) and index.count("t") == 300
    for i in range(400):
        found = index.search(key, vectors[i], 0.999)
        if i % 3 == 0 and i < 300:
            assert found is None or found.entry.id != f"e{i}"
        else:
            assert found is not None and found.entry.id == f"e{i}"


@pytest.mark.parametrize(
    "text", ["plain", 'quote " and \\ back', "line\nbreak\ttab\x00\x1f", "é ñ 中文 🎉", ""]
)
def test_a_token_event_is_written_as_json_dumps_writes_it(text: str) -> None:
    event = {"seq": 12, "type": "token", "text": text}
    assert dump_event(event) == json.dumps(event, separators=(",", ":"))
    assert decode_event(dump_event(event)) == event


def test_indexed_entries_stay_out_of_the_garbage_collectors_walks() -> None:
    # Each full collection walks every object it tracks; an index of 100,000 tracked
    # entries made those walks 60 ms long. Past the exact limit too (cells are trained).
    index = SemanticIndex(exact_max=2_000)
    key = ("t", "m", "c", "p")
    vectors = np.random.default_rng(7).standard_normal((5_000, 384)).astype(np.float32)
    gc.collect()
    before = len(gc.get_objects())
    for i, vector in enumerate(vectors):
        index.add(key, IndexedEntry(f"e{i}", f"k{i}", 2e9, f"prompt {i}"), vector)
    gc.collect()
    assert index.is_probed(key) and len(index) == 5_000
    assert len(gc.get_objects()) - before < 500
    match = index.search(key, vectors[42] / np.linalg.norm(vectors[42]), 0.99)
    assert match is not None and match.entry == IndexedEntry("e42", "k42", 2e9, "prompt 42")
