"""Reading OpenAI request bodies: JSON, then the schema, then the messages, each error 400
with `param` naming the exact place (`messages[1].content[0].type`), as OpenAI does."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from inferq.api.strict_json import strict_json
from inferq.errors import InvalidRequest

log = logging.getLogger(__name__)

RequestT = TypeVar("RequestT", bound=BaseModel)

_ROLES = ("system", "developer", "user", "assistant")
_UNSUPPORTED_ROLES = ("tool", "function")
_TYPE_ERRORS = {"int_type", "float_type", "string_type", "bool_type", "list_type", "dict_type"}


async def read_json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        data = strict_json(raw)
    except ValueError as exc:
        raise InvalidRequest(
            f"The request body is not valid JSON: {exc}.", code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    return data


def parse_request(model: type[RequestT], data: dict[str, Any], path: str) -> RequestT:
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        raise invalid_request_of(exc) from None
    ignored: list[str] = getattr(parsed, "ignored_fields", list)()
    if ignored:
        log.info("unknown request fields ignored", extra={"path": path, "fields": ignored})
    return parsed


def param_of(loc: Sequence[int | str]) -> str:
    param = ""
    for part in loc:
        param += f"[{part}]" if isinstance(part, int) else (f".{part}" if param else str(part))
    return param


def invalid_request_of(exc: ValidationError) -> InvalidRequest:
    first = exc.errors()[0]
    # Unions add the tried type to the location ("stop.str"); OpenAI names the field only.
    loc = [p for p in first["loc"] if not (isinstance(p, str) and p.endswith("]"))]
    loc = [p for p in loc if p not in ("str", "list[str]", "list[any]", "int", "bool")]
    param = param_of(loc) or None
    if first["type"] == "missing":
        return InvalidRequest(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    code = "invalid_type" if first["type"] in _TYPE_ERRORS else "invalid_value"
    return InvalidRequest(f"Invalid '{param}': {first['msg']}.", param=param, code=code)


def chat_messages(raw: list[Any]) -> list[dict[str, str]]:
    """Messages as the chat template takes them: roles checked, text parts joined."""
    if not raw:
        raise InvalidRequest(
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            param="messages",
            code="empty_array",
        )
    return [_message(item, f"messages[{i}]") for i, item in enumerate(raw)]


def _message(item: Any, param: str) -> dict[str, str]:
    if not isinstance(item, dict):
        raise InvalidRequest(
            f"Invalid type for '{param}': expected an object, but got {_type_name(item)}.",
            param=param,
            code="invalid_type",
        )
    role = item.get("role")
    if role is None:
        raise InvalidRequest(
            f"Missing required parameter: '{param}.role'.",
            param=f"{param}.role",
            code="missing_required_parameter",
        )
    if role in _UNSUPPORTED_ROLES:
        raise InvalidRequest(
            f"Invalid '{param}.role': '{role}' messages need tool calling, which inferq does "
            "not support.",
            param=f"{param}.role",
            code="unsupported_role",
        )
    if role not in _ROLES:
        supported = ", ".join(f"'{r}'" for r in _ROLES)
        raise InvalidRequest(
            f"Invalid value for '{param}.role': {json.dumps(role)}. Supported values are: "
            f"{supported}.",
            param=f"{param}.role",
            code="invalid_value",
        )
    content = content_text(item.get("content"), f"{param}.content")
    return {"role": "system" if role == "developer" else role, "content": content}


def content_text(content: Any, param: str) -> str:
    """A string, or a list of parts of which only text parts are accepted."""
    if isinstance(content, str):
        return content
    if content is None:
        raise InvalidRequest(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    if not isinstance(content, list):
        raise InvalidRequest(
            f"Invalid type for '{param}': expected a string or an array of content parts, "
            f"but got {_type_name(content)}.",
            param=param,
            code="invalid_type",
        )
    return "\n".join(_text_part(part, f"{param}[{j}]") for j, part in enumerate(content))


def _text_part(part: Any, param: str) -> str:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise InvalidRequest(
            f"Invalid '{param}': a content part is an object with a 'type'.",
            param=param,
            code="invalid_type",
        )
    if part["type"] != "text":
        raise InvalidRequest(
            f"Invalid '{param}.type': content of type '{part['type']}' is not supported by "
            "this server; only text parts are.",
            param=f"{param}.type",
            code="unsupported_content",
        )
    text = part.get("text")
    if not isinstance(text, str):
        raise InvalidRequest(
            f"Invalid '{param}.text': expected a string.",
            param=f"{param}.text",
            code="invalid_type",
        )
    return text


def _type_name(value: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}
    names.update({list: "an array", type(None): "null"})
    return names.get(type(value), "an object")
