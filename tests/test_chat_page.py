"""The /chat page end to end in headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import API_KEY

playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LONG = " ".join(f"word{i}" for i in range(300))


@pytest.fixture
async def page(stack: str) -> AsyncIterator[object]:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/browser.sh")
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page()
        page.set_default_timeout(30_000)
        # The page reads its API key from localStorage, as a user would have pasted it.
        await page.add_init_script(f"localStorage.setItem('inferq.apiKey', '{API_KEY}')")
        try:
            yield page
        finally:
            await browser.close()


async def test_page_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/chat")
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    assert '<script src="/chat/chat.js">' in response.text
    assert (await client.get("/chat/chat.js")).headers["content-type"].startswith("text/javascript")
    assert (await client.get("/chat/secrets.txt")).status_code == 404


async def test_prompt_streams_stop_stops_and_reload_shows_the_session(
    stack: str, page: playwright_api.Page
) -> None:
    await page.goto(f"{stack}/chat")
    await page.wait_for_function("document.getElementById('conn').textContent === 'connected'")
    await page.select_option("#model", "echo")
    await page.fill("#max-tokens", "6")
    await page.fill("#prompt", "hello browser")
    await page.press("#prompt", "Enter")
    first = page.locator(".msg.assistant").nth(0)
    await first.and_(page.locator("[data-status='complete']")).wait_for()
    assert await first.locator(".text").text_content() == "user: hello browser user: hello browser"
    status = await page.text_content("#status")
    assert status is not None and "finish: length" in status and "cache: miss" in status
    assert "ttft" in status
    session_id = page.url.split("#", 1)[1]

    # A long answer streams token by token; stop ends it and keeps what came.
    await page.fill("#max-tokens", "300")
    await page.fill("#prompt", LONG)
    await page.click("#send")
    second = page.locator(".msg.assistant").nth(1)
    await page.wait_for_function(
        "(document.querySelectorAll('.msg.assistant')[1]?.textContent || '').split(' ').length >= 5"
    )
    assert await second.get_attribute("data-status") is None, "still streaming"
    await page.click("#stop")
    await second.and_(page.locator("[data-status='partial']")).wait_for(timeout=5_000)
    partial = await second.locator(".text").text_content()
    assert partial is not None and 5 <= len(partial.split()) < 100
    assert "finish: cancelled" in (await page.text_content("#status") or "")
    assert await page.is_disabled("#stop")

    await page.reload()
    await page.wait_for_selector(".msg.assistant >> nth=1")
    assert page.url.endswith("#" + session_id)
    texts = await page.locator(".msg .text").all_text_contents()
    assert texts[:3] == ["hello browser", "user: hello browser user: hello browser", LONG]
    assert texts[3] == partial
    assert "stopped (partial)" in (await page.locator(".msg.assistant").nth(1).text_content() or "")
    entry = page.locator(f"#sessions li[data-id='{session_id}']")
    await entry.wait_for()
    assert await entry.text_content() == "hello browser"

    # New chat starts empty; choosing the session from the list brings it back.
    await page.click("#new-chat")
    assert await page.locator(".msg").count() == 0
    await entry.click()
    await page.wait_for_selector(".msg.assistant >> nth=1")
    assert await page.locator(".msg").count() == 4


async def test_two_quick_enters_in_a_new_chat_make_one_session_and_match_replies(
    stack: str, page: playwright_api.Page, client: httpx.AsyncClient
) -> None:
    await page.goto(f"{stack}/chat")
    await page.wait_for_function("document.getElementById('conn').textContent === 'connected'")
    await page.select_option("#model", "echo")
    await page.fill("#max-tokens", "6")
    # Two Enters in one go, as a quick typist's reach the page before any reply does.
    await page.evaluate(
        """() => {
          const prompt = document.getElementById("prompt");
          for (const text of ["first turn", "second turn"]) {
            prompt.value = text;
            prompt.dispatchEvent(new KeyboardEvent("keydown", {key: "Enter", bubbles: true}));
          }
        }"""
    )
    bubbles = page.locator(".msg.assistant")
    for i in range(2):
        await bubbles.nth(i).and_(page.locator("[data-status='complete']")).wait_for()
    session_id = page.url.split("#", 1)[1]
    session = (await client.get(f"/v1/sessions/{session_id}")).json()
    stored = session["messages"]
    assert [m["content"] for m in stored if m["role"] == "user"] == ["first turn", "second turn"]
    replies = [m for m in stored if m["role"] == "assistant"]
    assert len(replies) == 2, "both turns went into one session"
    for i, reply in enumerate(replies):  # each bubble shows its own turn's job and reply
        assert await bubbles.nth(i).get_attribute("data-job-id") == reply["job_id"]
        assert await bubbles.nth(i).locator(".text").text_content() == reply["content"]
