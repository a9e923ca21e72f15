"""The Ollama engine against the stand-in Ollama server: engine level, then a real worker."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from inferq.errors import EngineError
from inferq.settings import get_settings
from inferq.workers import ollama as ollama_engine
from inferq.workers.engine import GenerationRequest, SamplingParams
from inferq.workers.ollama import OllamaEngine
from tests.conftest import submit, wait_final
from tests.ollama_standin import continuation, tokenize
from tests.stack import LOG_DIR, Proc, inferq_argv, wait_http, wait_workers

MODEL = "gemma3:270m"
INFERQ_MODEL = f"ollama/{MODEL}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_standin(name: str, *args: str) -> tuple[Proc, str]:
    port = _free_port()
    argv = [sys.executable, "-m", "tests.ollama_standin", "--port", str(port), *args]
    proc = Proc(name, argv, {})
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/api/version", proc)
    return proc, url


@pytest.fixture(scope="module")
def standin() -> Iterator[str]:
    proc, url = _start_standin("ollama-standin", "--models", f"{MODEL},tinyllama:latest")
    yield url
    proc.stop()


@pytest.fixture(scope="module")
def busy_standin() -> Iterator[str]:
    """One generation at a time and no queue: a second request gets 503 at once."""
    proc, url = _start_standin("ollama-standin-busy", "--parallel", "1", "--max-queue", "0")
    yield url
    proc.stop()


def _stats(url: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{url}/_standin/stats").json()
    return stats


_loaded: list[OllamaEngine] = []


@pytest.fixture(autouse=True)
def _unload_engines() -> Iterator[None]:
    yield
    while _loaded:
        _loaded.pop().unload()


def _engine(url: str, model: str = MODEL) -> OllamaEngine:
    engine = OllamaEngine(f"ollama/{model}", model, host=url)
    engine.load()
    _loaded.append(engine)
    return engine


def _request(prompt: str, max_tokens: int = 6, **params: Any) -> GenerationRequest:
    return GenerationRequest(prompt, SamplingParams(max_tokens=max_tokens, **params))


def _expected(prompt: str, n: int) -> str:
    return "".join(continuation(prompt, {"temperature": 0})[:n])


def test_greedy_generation_sends_raw_prompt_and_options(standin: str) -> None:
    engine = _engine(standin)
    prompt = "<start_of_turn>user\nWhy is the sky blue?<end_of_turn>\n<start_of_turn>model\n"
    tokens = list(engine.generate(_request(prompt, temperature=0.0, top_p=0.9, seed=11)))
    assert "".join(t.text for t in tokens) == _expected(prompt, 6)
    assert len(tokens) == 6  # num_predict reached: done_reason "length", max_tokens tokens
    sent = _stats(standin)["last_request"]
    assert sent["raw"] is True and sent["prompt"] == prompt and sent["stream"] is True
    assert sent["options"] == {"temperature": 0.0, "top_p": 0.9, "num_predict": 6, "seed": 11}


def test_penalties_are_sent_and_a_grammar_is_refused(standin: str) -> None:
    engine = _engine(standin)
    list(engine.generate(_request("hi", max_tokens=1, presence_penalty=0.5)))
    assert _stats(standin)["last_request"]["options"]["presence_penalty"] == 0.5
    with pytest.raises(EngineError) as caught:
        next(engine.generate(_request("hi", grammar='root ::= "a"')))
    assert caught.value.code == "unsupported"


def test_end_of_turn_before_max_tokens_ends_early(standin: str) -> None:
    engine = _engine(standin)
    tokens = list(engine.generate(_request("Tell me [[eos-after:3]]", max_tokens=10)))
    assert len(tokens) == 3


def test_missing_model_is_a_clear_error_and_never_pulled(standin: str) -> None:
    before = _stats(standin)["requests"]
    engine = OllamaEngine("ollama/llama9:70b", "llama9:70b", host=standin)
    with pytest.raises(EngineError) as caught:
        engine.load()
    assert caught.value.code == "model_not_found"
    assert "no model 'llama9:70b'" in caught.value.message
    assert "ollama pull llama9:70b" in caught.value.message
    # Exactly one request, the `show`: no pull, no generation.
    assert _stats(standin)["requests"] == before + 1


def test_model_name_without_tag_means_latest(standin: str) -> None:
    engine = _engine(standin, "tinyllama")
    assert len(list(engine.generate(_request("hi", max_tokens=2)))) == 2


def test_error_line_inside_200_stream_fails_with_its_message(standin: str) -> None:
    engine = _engine(standin)
    received: list[str] = []
    with pytest.raises(EngineError) as caught:
        for token in engine.generate(_request("Go on [[error-after:2]]", max_tokens=8)):
            received.append(token.text)
    assert len(received) == 2
    assert "an error was encountered while running the model" in caught.value.message


def test_closing_the_generator_closes_the_stream(standin: str) -> None:
    engine = _engine(standin)
    before = _stats(standin)
    tokens = engine.generate(_request("Slowly [[delay:0.1]]", max_tokens=100))
    assert next(tokens).text and next(tokens).text
    tokens.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stats = _stats(standin)
        if stats["disconnected"] > before["disconnected"]:
            break
        time.sleep(0.05)
    assert stats["disconnected"] == before["disconnected"] + 1
    assert stats["active"] == 0 and stats["completed"] == before["completed"]


def test_count_tokens_is_the_servers_prompt_count(standin: str) -> None:
    engine = _engine(standin)
    text = "one two three four five"
    assert engine.count_tokens(text) == len(tokenize(text)) == 5


def test_capacity_names_the_host(standin: str) -> None:
    capacity = _engine(standin).capacity()
    assert capacity["device"] == standin and capacity["ollama_model"] == MODEL


def test_busy_server_503_fails_after_retries(
    busy_standin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ollama_engine, "_BUSY_RETRY_DELAYS_S", (0.05, 0.05))
    engine = _engine(busy_standin)
    holder = engine.generate(_request("hold [[delay:0.2]]", max_tokens=50))
    next(holder)
    busy_before = _stats(busy_standin)["busy"]
    with pytest.raises(EngineError) as caught:
        next(engine.generate(_request("second", max_tokens=2)))
    holder.close()
    assert caught.value.code == "engine_busy" and "HTTP 503" in caught.value.message
    assert _stats(busy_standin)["busy"] == busy_before + 3  # first try and two retries


def test_busy_server_503_is_retried_until_free(
    busy_standin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ollama_engine, "_BUSY_RETRY_DELAYS_S", (0.2, 0.2, 0.2, 0.2))
    engine = _engine(busy_standin)
    holder = engine.generate(_request("hold [[delay:0.1]]", max_tokens=50))
    next(holder)
    busy_before = _stats(busy_standin)["busy"]
    threading.Timer(0.3, holder.close).start()
    tokens = list(engine.generate(_request("second", max_tokens=3, temperature=0.0)))
    assert "".join(t.text for t in tokens) == _expected("second", 3)
    assert _stats(busy_standin)["busy"] > busy_before  # it was refused at least once


# --- through the whole stack: API -> queue -> `inferq worker --engine ollama` -> stand-in ---


@pytest.fixture(scope="module")
def ollama_worker(stack: str, standin: str) -> Iterator[str]:
    proc = Proc(
        "worker-ollama",
        inferq_argv("worker", "--engine", "ollama", "--model", INFERQ_MODEL),
        {"OLLAMA_HOST": standin},
    )
    try:
        wait_workers(get_settings().redis_url, {INFERQ_MODEL}, timeout=60)
        yield standin
    finally:
        proc.stop()


async def test_job_through_ollama_worker(client: httpx.AsyncClient, ollama_worker: str) -> None:
    prompt = "Why is the sky blue?"
    accepted = await submit(
        client, model=INFERQ_MODEL, prompt=prompt, max_tokens=5, temperature=0.0
    )
    job = await wait_final(client, accepted["id"], timeout=60)
    assert job["status"] == "completed", job
    assert job["engine"] == "ollama"
    assert job["output"] == _expected(prompt, 5)
    assert job["finish_reason"] == "length"
    assert job["usage"]["completion_tokens"] == 5


async def test_job_with_stream_error_fails_with_its_message(
    client: httpx.AsyncClient, ollama_worker: str
) -> None:
    accepted = await submit(
        client, model=INFERQ_MODEL, prompt="Tell me [[error-after:2]]", max_tokens=8
    )
    job = await wait_final(client, accepted["id"], timeout=60)
    assert job["status"] == "failed", job
    assert "an error was encountered while running the model" in job["error"]["message"]


async def test_cancelled_job_closes_the_ollama_stream(
    client: httpx.AsyncClient, ollama_worker: str
) -> None:
    before = _stats(ollama_worker)["disconnected"]
    accepted = await submit(
        client, model=INFERQ_MODEL, prompt="Long story [[delay:0.2]]", max_tokens=200
    )
    async with asyncio.timeout(30):
        while (await client.get(f"/v1/jobs/{accepted['id']}")).json()["status"] != "running":
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    await client.post(f"/v1/jobs/{accepted['id']}/cancel")
    job = await wait_final(client, accepted["id"], timeout=30)
    assert job["status"] == "cancelled"
    async with asyncio.timeout(10):
        while _stats(ollama_worker)["disconnected"] == before:
            await asyncio.sleep(0.05)
    assert _stats(ollama_worker)["active"] == 0


def test_worker_for_a_model_the_host_lacks_exits_with_a_clear_error(standin: str) -> None:
    (LOG_DIR / "worker-ollama-missing.log").unlink(missing_ok=True)
    proc = Proc(
        "worker-ollama-missing",
        inferq_argv("worker", "--engine", "ollama", "--model", "ollama/llama9:70b"),
        {"OLLAMA_HOST": standin},
    )
    try:
        returncode = proc.process.wait(timeout=60)
    finally:
        proc.stop()
    assert returncode != 0
    assert "has no model 'llama9:70b'" in proc.log_path.read_text()


def test_standin_speaks_the_documented_api_to_the_official_client(standin: str) -> None:
    """The stand-in itself: the official client parses every endpoint the engine may meet."""
    import ollama

    client = ollama.Client(host=standin)
    try:
        assert {m.model for m in client.list().models} == {MODEL, "tinyllama:latest"}
        assert client.show(MODEL).details.family == "gemma3"  # type: ignore[union-attr]
        parts = list(
            client.chat(
                model=MODEL,
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                options={"num_predict": 3},
            )
        )
        assert [p.done for p in parts] == [False, False, False, True]
        final = parts[-1]
        assert final.done_reason == "length" and final.eval_count == 3
        assert final.total_duration and final.total_duration > final.load_duration  # type: ignore[operator]
        whole = client.generate(model=MODEL, prompt="hi", stream=False, options={"num_predict": 2})
        assert whole.done and whole.eval_count == 2 and len(tokenize(whole.response or "")) == 2
        with pytest.raises(ollama.ResponseError) as caught:
            client.generate(model="nope", prompt="hi")
        assert caught.value.status_code == 404
    finally:
        client.close()  # type: ignore[no-untyped-call]
    body = {"model": MODEL, "prompt": "hi", "options": {"num_predict": 3}}
    raw = httpx.post(f"{standin}/api/generate", json=body)
    assert raw.headers["content-type"] == "application/x-ndjson"
    lines = raw.text.splitlines()
    assert len(lines) == 4 and raw.text.endswith("\n")
    assert all(line.startswith('{"model":"gemma3:270m","created_at":') for line in lines)
    assert httpx.get(f"{standin}/api/version").json()["version"]
