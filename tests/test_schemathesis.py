"""Property-based run over /openapi.json with credentials: no input yields a 5xx.

Bounded for CI: a few examples per operation (a few hundred requests in all), no shrinking
hunts. A documented 503 is allowed (queue full, overloaded, no worker); 500 is not, nor a 503
that blames a backend which is up.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from tests.auth_helpers import bearer, tenant_with_key
from tests.conftest import _pg_dsn

EXAMPLES_PER_OPERATION = 8


@pytest.fixture(scope="session")
def fuzz_key(stack: str) -> str:
    return asyncio.run(tenant_with_key(_pg_dsn(), f"fuzz-{uuid.uuid4().hex[:8]}"))


def _refusal(response: Any) -> bool:
    """A documented 503, not a backend error in disguise: both backends are up here, so
    `postgresql_unavailable` means PostgreSQL refused the input (a NUL was, until 2026-12-07)."""
    if response.status_code != 503:
        return False
    error = response.json().get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return code not in ("postgresql_unavailable", "redis_unavailable")


def _fuzz(operation: Any, key: str, failures: list[str]) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case: Any) -> None:
        response = case.call(headers=bearer(key), timeout=30)
        if response.status_code >= 500 and not _refusal(response):
            failures.append(
                f"{case.method} {case.formatted_path} -> {response.status_code}: "
                f"{response.text[:300]}"
            )

    run()


def test_no_server_errors(stack: str, fuzz_key: str) -> None:
    """schemathesis' own pytest plugin does not run on this pytest; drive it directly."""
    schema = schemathesis.openapi.from_url(f"{stack}/openapi.json")
    # Purges and revocations act on real data; their own tests cover them.
    operations = [r.ok() for r in schema.exclude(method="DELETE").get_all_operations()]
    assert len(operations) > 20
    failures: list[str] = []
    for operation in operations:
        _fuzz(operation, fuzz_key, failures)
    assert not failures, "\n".join(failures[:10])


def test_routes_that_parse_their_own_body_document_it(stack: str) -> None:
    """Else /docs shows no body for them and the fuzzer above never gets past their parsing."""
    document = httpx.get(f"{stack}/openapi.json").json()
    schemas = document["components"]["schemas"]
    openai = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
    ollama = ["/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/show"]
    for path in openai + ollama:
        body = document["paths"][path]["post"]["requestBody"]
        ref = body["content"]["application/json"]["schema"]["$ref"]
        schema = schemas[ref.removeprefix("#/components/schemas/")]
        assert "model" in schema["properties"], path
    chat = schemas["ChatCompletionRequest"]
    assert {"messages", "model"} <= set(chat["required"])
