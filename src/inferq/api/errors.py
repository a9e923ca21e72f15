"""Map every failure once, at the HTTP boundary, to the OpenAI error shape."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from inferq.errors import InferqError, InvalidRequest, ServiceUnavailable

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
        return _bad_body("The request body is not valid JSON.", "invalid_json")
    if tuple(first.get("loc", ())) == ("body",) and first.get("type") in _NOT_AN_OBJECT:
        return _bad_body("The request body must be a JSON object.", "invalid_type")
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    param = ".".join(loc) or None
    message = f"{param}: {first['msg']}" if param else str(first["msg"])
    body = _error_body(422, message, "invalid_request_error", "invalid_value", param)
    return JSONResponse(body, status_code=422)


# How pydantic says a body is no object at all: none, null, a list, a form, plain text.
_NOT_AN_OBJECT = frozenset({"missing", "model_attributes_type", "dict_type", "model_type"})


def _bad_body(message: str, code: str) -> JSONResponse:
    body = _error_body(400, message, "invalid_request_error", code, None)
    return JSONResponse(body, status_code=400)


# FastAPI's words for a body it could not decode (not UTF-8, compressed, a form).
_UNPARSED_BODY = "There was an error parsing the body"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == _UNPARSED_BODY:
        return _bad_body("The request body is not valid JSON (send it as UTF-8).", "invalid_json")
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    body = _error_body(exc.status_code, str(exc.detail), "invalid_request_error", code, None)
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def input_error(exc: BaseException) -> InvalidRequest | None:
    """The client's fault behind a backend's or an encoder's failure, if it is one.

    PostgreSQL's "data exception" class (SQLSTATE 22...) is a value it refuses to store: a NUL
    in text or JSON, a number out of a column's range. UnicodeEncodeError is a str with a lone
    surrogate that got past JSON parsing into a free-form field. Nothing of the request was
    committed either way.
    """
    if isinstance(exc, UnicodeEncodeError):
        message = "The request holds text that is not valid Unicode (a lone surrogate, \\ud800)."
        return InvalidRequest(message, code="invalid_unicode")
    if not isinstance(exc, DBAPIError):
        return None
    sqlstate = str(getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None) or "")
    if sqlstate in ("22021", "22P05"):  # a NUL byte in text; a \u0000 escape in JSON
        message = "The request holds a NUL character (\\u0000), which PostgreSQL text cannot hold."
    elif sqlstate.startswith("22"):
        reason = str(exc.orig).splitlines()[-1] if exc.orig else "invalid value"
        message = f"The request holds a value that cannot be stored: {reason}."
    else:
        return None
    return InvalidRequest(message, code="unstorable_value")


async def _backend_down(request: Request, exc: Exception) -> JSONResponse:
    if (refused := input_error(exc)) is not None:
        return error_response(refused)
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
    app.add_exception_handler(UnicodeEncodeError, _backend_down)  # input_error makes it a 400
    app.add_exception_handler(Exception, _unexpected)
