"""The operator-facing files name only real things: metrics, entry points and settings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import REGISTRY

import inferq.metrics  # noqa: F401  (registers every metric)
from inferq.cli.main import build_parser
from inferq.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
METRIC = re.compile(r"\binferq_[a-z0-9_]+")


def exported_names() -> set[str]:
    names: set[str] = set()
    for family in REGISTRY.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        names.add(family.name)
        names.update(family.name + s for s in suffixes.get(family.type, []))
    return names


def referenced(text: str) -> set[str]:
    return set(METRIC.findall(text))


def test_alert_rules_reference_real_metrics() -> None:
    rules = yaml.safe_load((ROOT / "deploy/alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    names = set().union(*(referenced(e) for e in exprs))
    assert names, "the alert rules must reference inferq metrics"
    assert names <= exported_names(), names - exported_names()


def test_dashboard_references_real_metrics() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/inferq.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    names = set().union(*(referenced(e) for e in exprs))
    assert len(names) >= 10
    assert names <= exported_names(), names - exported_names()


def compose() -> dict[str, dict[str, object]]:
    services: dict[str, dict[str, object]] = yaml.safe_load(
        (ROOT / "docker-compose.yml").read_text()
    )["services"]
    return services


def test_compose_commands_are_real_entry_points() -> None:
    parser = build_parser()
    commands = [s["command"] for s in compose().values() if isinstance(s.get("command"), list)]
    inferq_commands = [c for c in commands if c[0] == "inferq"]
    assert {c[1] for c in inferq_commands} >= {"api", "worker", "flower", "migrate"}
    for command in inferq_commands:
        parser.parse_args(command[1:])  # exits (fails the test) on an unknown command or flag


def test_compose_and_dockerfile_set_only_real_settings() -> None:
    fields = {f"INFERQ_{name.upper()}" for name in Settings.model_fields}
    used: set[str] = set()
    for service in compose().values():
        env = service.get("environment") or {}
        assert isinstance(env, dict)
        used |= {key for key in env if key.startswith("INFERQ_")}
    used |= set(re.findall(r"\bINFERQ_[A-Z0-9_]+", (ROOT / "Dockerfile").read_text()))
    assert used, "compose must configure inferq"
    assert used <= fields, used - fields


def test_prometheus_scrapes_api_and_workers() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"inferq-api", "inferq-workers"} <= set(jobs)
    targets = [t for job in jobs.values() for sc in job["static_configs"] for t in sc["targets"]]
    services = set(compose())
    assert all(t.split(":")[0] in services for t in targets)


@pytest.mark.usefixtures("stack")
def test_api_serves_metrics(stack: str) -> None:
    httpx.get(f"{stack}/health")
    body = httpx.get(f"{stack}/metrics").text
    assert 'inferq_http_requests_total{route="/health",status="200"}' in body
    assert "inferq_queue_depth{" in body
    assert "inferq_live_workers{" in body


def test_configuration_doc_is_current() -> None:
    import runpy

    render = runpy.run_path(str(ROOT / "scripts/config_table.py"))["render"]
    assert (ROOT / "docs/configuration.md").read_text() == render(), (
        "run: .venv/bin/python scripts/config_table.py > docs/configuration.md"
    )
