"""The browser chat page at /chat: static HTML, JavaScript and CSS, no build step."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from inferq.errors import NotFound

STATIC = Path(__file__).parent / "static"
_ASSETS = {"chat.js": "text/javascript", "chat.css": "text/css"}

router = APIRouter(tags=["chat page"], include_in_schema=False)


@router.get("/chat")
async def chat_page() -> FileResponse:
    return FileResponse(STATIC / "chat.html", media_type="text/html", headers=_NO_STORE)


@router.get("/chat/{asset}")
async def chat_asset(asset: str) -> FileResponse:
    if asset not in _ASSETS:
        raise NotFound(f"No chat asset '{asset}'.")
    return FileResponse(STATIC / asset, media_type=_ASSETS[asset], headers=_NO_STORE)


# The page is tiny; never serve a stale one after an upgrade.
_NO_STORE = {"Cache-Control": "no-cache"}
