"""JSON mode and JSON Schema as GBNF grammars that constrain llama.cpp's decoding.

Two changes to llama.cpp's stock grammars keep a small model from wandering: whitespace is at
most one space (so it cannot pad forever with newlines and tabs), and strings exclude control
characters (a raw newline inside a string is not valid JSON).
"""

from __future__ import annotations

import json
from typing import Any

from inferq.errors import InvalidRequest

# Any JSON object (OpenAI's JSON mode returns an object, never a bare value).
JSON_OBJECT_GBNF = r"""
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= "-"? ([0-9] | [1-9] [0-9]{0,15}) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})? ws
ws     ::= " "?
"""

_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_STRICT_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


def json_schema_grammar(schema: Any, *, param: str) -> str:
    """A grammar whose every complete sentence is JSON valid against `schema`.

    Raises InvalidRequest (naming `param`) for a schema llama.cpp's converter cannot handle.
    """
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    if not isinstance(schema, dict):
        raise InvalidRequest(f"{param} must be a JSON Schema object.", param=param)
    try:
        grammar: str = json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter raises bare Exceptions and KeyErrors
        raise InvalidRequest(
            f"{param}: this JSON Schema is not supported ({type(exc).__name__}: {exc}).",
            param=param,
            code="unsupported_json_schema",
        ) from exc
    return _tighten(grammar)


def _tighten(grammar: str) -> str:
    lines = []
    for line in grammar.splitlines():
        if line.startswith("space ::="):
            line = 'space ::= " "?'
        elif line.startswith(_LOOSE_CHAR):
            line = _STRICT_CHAR + line[len(_LOOSE_CHAR) :]
        lines.append(line)
    return "\n".join(lines) + "\n"
