"""Map every failure once, at the HTTP boundary, to the OpenAI error shape."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from inferq.errors import InferqError, ServiceUnavailable

log = logging.getLogger(__name__)


def error_response(exc: InferqError) -> JSONResponse:
    headers = {}
    retry_after = getattr(exc, "retry_after_s", None)  # 503s and 429s (inferq.auth.errors)
    if isinstance(exc, ServiceUnavailable) or retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=headers)


def _error_body(
    status: int, message: str, error_type: str, code: str, param: str | None
) -> dict[str, object]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


async def _inferq_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InferqError)
    return error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"msg": "invalid request", "loc": (), "type": "invalid"}
    if first.get("type") == "json_invalid":
        body = _error_body(
            400,
            "The request body is not valid JSON.",
            "invalid_request_error",
            "invalid_json",
            None,
        )
        return JSONResponse(body, status_code=400)
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    param = ".".join(loc) or None
    message = f"{param}: {first['msg']}" if param else str(first["msg"])
    body = _error_body(422, message, "invalid_request_error", "invalid_value", param)
    return JSONResponse(body, status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    body = _error_body(exc.status_code, str(exc.detail), "invalid_request_error", code, None)
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _backend_down(request: Request, exc: Exception) -> JSONResponse:
    backend = "redis" if isinstance(exc, RedisError) else "postgresql"
    log.warning("backend unavailable", extra={"backend": backend, "error": str(exc)})
    return error_response(
        ServiceUnavailable(
            f"{backend} is unavailable; retry shortly.", code=f"{backend}_unavailable"
        )
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    body = _error_body(500, "Internal server error.", "server_error", "internal_error", None)
    return JSONResponse(body, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(InferqError, _inferq_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for backend_error in (RedisError, OperationalError, InterfaceError, DBAPIError, OSError):
        app.add_exception_handler(backend_error, _backend_down)
    app.add_exception_handler(Exception, _unexpected)
