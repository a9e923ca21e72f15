"""Traffic policies as routing functions: splits, stickiness, canary steps, blue-green."""

from __future__ import annotations

import uuid

import pytest

from inferq.errors import InvalidValue
from inferq.registry import policies
from inferq.registry.policies import CANDIDATE, CONTROL
from inferq.registry.service import split_name
from inferq.registry.stats import percentiles, wilson

N = 10_000


def _users() -> list[str]:
    return [f"user-{i}" for i in range(N)]


def _share(policy: object, users: list[str]) -> float:
    arms = [policies.choose_arm(policy, u).name for u in users]  # type: ignore[arg-type]
    return arms.count(CANDIDATE) / len(arms)


@pytest.mark.parametrize("ratio", [0.5, 0.2, 0.9])
def test_ab_split_of_ten_thousand_lands_within_two_percent(ratio: float) -> None:
    policy = policies.new_policy("echo", "ab", "1.0.0", "2.0.0", ratio, "user")
    assert abs(_share(policy, _users()) - ratio) <= 0.02


def test_ab_is_sticky_per_user() -> None:
    policy = policies.new_policy("echo", "ab", "1.0.0", "2.0.0", 0.5, "user")
    first = [policies.choose_arm(policy, u) for u in _users()]
    again = [policies.choose_arm(policy, u) for u in _users()]
    assert first == again
    assert {a.version for a in first} == {"1.0.0", "2.0.0"}


def test_requests_without_a_user_split_at_random() -> None:
    policy = policies.new_policy("echo", "ab", "1.0.0", "2.0.0", 0.3, "user")
    share = _share(policy, [""] * N)  # no sticky key: a fresh draw each time
    assert abs(share - 0.3) <= 0.02


def test_per_request_stickiness_ignores_the_user() -> None:
    policy = policies.new_policy("echo", "ab", "1.0.0", "2.0.0", 0.5, "request")
    arms = {policies.choose_arm(policy, "same-user").name for _ in range(200)}
    assert arms == {CONTROL, CANDIDATE}


def test_canary_step_changes_the_share_and_only_moves_users_forward() -> None:
    policy = policies.new_policy("gemma-3-270m", "canary", "1.0.0", "2.0.0", None, "user")
    users = _users()
    assert abs(_share(policy, users) - 0.05) <= 0.02
    before = {u for u in users if policies.choose_arm(policy, u).name == CANDIDATE}
    policies.canary_step(policy, None, 20)  # +20 points: 25 %
    assert policy.share == pytest.approx(0.25)
    assert abs(_share(policy, users) - 0.25) <= 0.02
    after = {u for u in users if policies.choose_arm(policy, u).name == CANDIDATE}
    assert before <= after  # a canary user stays on the canary
    policies.canary_step(policy, 100, 0)
    assert _share(policy, users) == 1.0
    with pytest.raises(InvalidValue):
        policies.canary_step(policy, 50, 0)  # never down: stop it to roll back


def test_blue_green_switches_all_and_rolls_back() -> None:
    policy = policies.new_policy("echo", "blue_green", "1.0.0", "2.0.0", None, "user")
    users = _users()[:500]
    assert {policies.choose_arm(policy, u).version for u in users} == {"1.0.0"}
    policies.switch(policy, to_candidate=True)
    assert {policies.choose_arm(policy, u).version for u in users} == {"2.0.0"}
    policies.switch(policy, to_candidate=False)
    assert {policies.choose_arm(policy, u).version for u in users} == {"1.0.0"}
    assert [h["action"] for h in policy.history] == ["start", "switch", "rollback"]


def test_policy_actions_check_their_kind() -> None:
    ab = policies.new_policy("echo", "ab", "1.0.0", "2.0.0", 0.5, "user")
    with pytest.raises(InvalidValue):
        policies.switch(ab, to_candidate=True)
    with pytest.raises(InvalidValue):
        policies.new_policy("echo", "ab", "1.0.0", "1.0.0", 0.5, "user")
    with pytest.raises(InvalidValue):
        policies.new_policy("echo", "blue_green", "1.0.0", "2.0.0", 0.5, "user")
    policies.stop(ab)
    with pytest.raises(InvalidValue):
        policies.set_split(ab, 0.1)


def test_names_pin_versions_but_ollama_tags_stay() -> None:
    assert split_name("gemma-3-270m") == ("gemma-3-270m", None)
    assert split_name("gemma-3-270m:1.0.0") == ("gemma-3-270m", "1.0.0")
    assert split_name("ollama/gemma3:270m") == ("ollama/gemma3:270m", None)


def test_wilson_interval_and_percentiles() -> None:
    low, high = wilson(0, 20) or (0.0, 0.0)
    assert low == 0.0 and 0.13 < high < 0.17  # the "rule of three"-like bound, not 0
    low, high = wilson(50, 100) or (0.0, 0.0)
    assert 0.40 < low < 0.41 and 0.59 < high < 0.60
    assert wilson(0, 0) is None
    figures = percentiles([float(x) for x in range(1, 101)])
    assert figures == {"p50": 50.0, "p90": 90.0, "p99": 99.0}


def test_policy_ids_scope_the_hash() -> None:
    a = policies.bucket(str(uuid.uuid4()), "u")
    b = policies.bucket(str(uuid.uuid4()), "u")
    assert a != b and 0 <= a < 1
