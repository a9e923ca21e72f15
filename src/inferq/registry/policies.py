"""Traffic policies: which version a request goes to, and how each policy moves.

A policy routes a fraction `share` of a model's traffic to its `candidate` version and the rest
to its `control`. Which side a request lands on is a hash of (policy id, sticky key) mapped to
[0, 1): the same user always lands on the same side while the share stays put, and raising a
canary's share only moves users from control to candidate, never back.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from inferq.errors import InvalidValue
from inferq.registry.models import PolicyKind, TrafficPolicy

CONTROL, CANDIDATE = "control", "candidate"


@dataclass(frozen=True)
class Arm:
    name: str  # "control" or "candidate"
    version: str


def bucket(policy_id: str, key: str) -> float:
    """A uniform number in [0, 1) fixed by the policy and the key (sticky routing)."""
    digest = hashlib.sha256(f"{policy_id}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def choose_arm(policy: TrafficPolicy, sticky_key: str | None) -> Arm:
    """The arm of a request; without a sticky key (or sticky="request") each request is new."""
    key = sticky_key if sticky_key and policy.sticky == "user" else uuid.uuid4().hex
    if bucket(str(policy.id), key) < policy.share:
        return Arm(CANDIDATE, policy.candidate)
    return Arm(CONTROL, policy.control)


def new_policy(
    model: str, kind: str, control: str, candidate: str, share: float | None, sticky: str
) -> TrafficPolicy:
    """A policy about to start: A/B at `share` (default 0.5), a canary at `share` (default
    0.05), blue-green on blue (= control, share 0) until switched."""
    if kind not in {k.value for k in PolicyKind}:
        raise InvalidValue("kind: one of ab, canary, blue_green", param="kind")
    if control == candidate:
        raise InvalidValue("control and candidate must be different versions", param="candidate")
    defaults = {PolicyKind.AB: 0.5, PolicyKind.CANARY: 0.05, PolicyKind.BLUE_GREEN: 0.0}
    start = defaults[PolicyKind(kind)] if share is None else share
    if kind == PolicyKind.BLUE_GREEN and start not in (0.0, 1.0):
        raise InvalidValue("share: blue-green starts at 0 (blue) or 1 (green)", param="share")
    _check_share(start)
    policy = TrafficPolicy(
        id=uuid.uuid4(),
        model=model,
        kind=kind,
        control=control,
        candidate=candidate,
        share=start,
        sticky=sticky,
        history=[],
        started_at=datetime.now(UTC),
    )
    _record(policy, "start")
    return policy


def canary_step(policy: TrafficPolicy, percent: float | None, step: float) -> None:
    """Raise a canary to `percent`, or by `step` points; a canary only ever goes up."""
    _require(policy, PolicyKind.CANARY, "step")
    target = percent / 100 if percent is not None else min(1.0, policy.share + step / 100)
    _check_share(target)
    if target < policy.share:
        raise InvalidValue(
            f"percent: a canary only goes up (now {policy.share * 100:g} %); stop it to roll back",
            param="percent",
        )
    policy.share = target
    _record(policy, "step")


def set_split(policy: TrafficPolicy, share: float) -> None:
    _require(policy, PolicyKind.AB, "split")
    _check_share(share)
    policy.share = share
    _record(policy, "split")


def switch(policy: TrafficPolicy, to_candidate: bool) -> None:
    """Blue-green: all traffic to green (the candidate) or back to blue (rollback)."""
    _require(policy, PolicyKind.BLUE_GREEN, "switch" if to_candidate else "rollback")
    policy.share = 1.0 if to_candidate else 0.0
    _record(policy, "switch" if to_candidate else "rollback")


def stop(policy: TrafficPolicy) -> None:
    policy.stopped_at = datetime.now(UTC)
    _record(policy, "stop")


def view(policy: TrafficPolicy) -> dict[str, Any]:
    return {
        "id": str(policy.id),
        "object": "traffic_policy",
        "model": policy.model,
        "kind": policy.kind,
        "control": policy.control,
        "candidate": policy.candidate,
        "share": policy.share,
        "percent": round(policy.share * 100, 4),
        "sticky": policy.sticky,
        "running": policy.stopped_at is None,
        "started_at": policy.started_at.isoformat() if policy.started_at else None,
        "stopped_at": policy.stopped_at.isoformat() if policy.stopped_at else None,
        "history": policy.history,
    }


def _record(policy: TrafficPolicy, action: str) -> None:
    # A new list, so the ORM sees the JSONB column change.
    entry = {"action": action, "share": policy.share, "at": datetime.now(UTC).isoformat()}
    policy.history = [*(policy.history or []), entry]


def _require(policy: TrafficPolicy, kind: PolicyKind, action: str) -> None:
    if policy.kind != kind.value:
        raise InvalidValue(f"'{action}' applies to a {kind.value} policy, not {policy.kind}")
    if policy.stopped_at is not None:
        raise InvalidValue(f"policy {policy.id} is stopped")


def _check_share(share: float) -> None:
    if not 0.0 <= share <= 1.0:
        raise InvalidValue("share: between 0 and 1 (percent: between 0 and 100)", param="share")
