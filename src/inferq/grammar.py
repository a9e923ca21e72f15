"""JSON mode and JSON Schema as GBNF grammars that constrain llama.cpp's decoding.

Two changes to llama.cpp's stock grammars keep a small model from wandering: whitespace is at
most one space (so it cannot pad forever with newlines and tabs), and strings exclude control
characters (a raw newline inside a string is not valid JSON).
"""

from __future__ import annotations

import json
from typing import Any

from inferq.errors import InvalidRequest
from inferq.tokenizers import Tokenizer

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


def json_schema_grammar(schema: Any, *, param: str, tokenizer: Tokenizer | None = None) -> str:
    """A grammar whose every complete sentence is JSON valid against `schema`.

    Raises InvalidRequest (naming `param`) for a schema llama.cpp's converter cannot handle,
    or whose grammar llama.cpp would not parse against the model's vocabulary (`tokenizer`,
    when it is loaded; else the worker finds out): the converter emits some of those itself
    (`{"enum": []}`), and a job that reached a worker with one failed there, where it used to
    count against the pool's circuit breaker.
    """
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    if not isinstance(schema, dict):
        raise InvalidRequest(f"{param} must be a JSON Schema object.", param=param)
    try:
        grammar: str = json_schema_to_gbnf(json.dumps(_portable_patterns(schema)))
    except Exception as exc:  # the converter raises bare Exceptions and KeyErrors
        raise _unsupported(param, f"{type(exc).__name__}: {exc}") from exc
    grammar = _tighten(grammar)
    if tokenizer is not None and not tokenizer.grammar_parses(grammar):
        raise _unsupported(param, "llama.cpp cannot compile the grammar it converts to")
    return grammar


def _unsupported(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(
        f"{param}: this JSON Schema is not supported ({why}).",
        param=param,
        code="unsupported_json_schema",
    )


# Regex classes the converter copies into GBNF, which has no such escapes (`"\d"` does not
# parse): spelled out as the character classes they mean (ASCII, as JSON Schema's are in
# practice).
_CLASSES = {"d": "0-9", "w": "a-zA-Z0-9_", "s": " \\t\\n\\r"}
_NEGATED = {"D": "d", "W": "w", "S": "s"}
# Kept as they are: understood by GBNF (`\n`, `\x41`), or by the converter (`\(`). Inside a
# class, `\[` and `\]` are GBNF's too.
_KEPT = frozenset("nrtxuU\\()|{}*+?")


def _portable_patterns(node: Any) -> Any:
    """`schema` with every `pattern` rewritten into escapes GBNF understands."""
    if isinstance(node, dict):
        return {
            key: _gbnf_pattern(value)
            if key == "pattern" and isinstance(value, str)
            else _portable_patterns(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_portable_patterns(item) for item in node]
    return node


def _gbnf_pattern(pattern: str) -> str:
    """`\\d`, `\\w`, `\\s` (and their negations outside a class) as classes, and an
    escaped punctuation character (`\\.`) as its hex escape. Anything else (`\\p{L}`,
    `\\b`) is left for the converter, or the parse check, to refuse."""
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            escaped = pattern[i + 1]
            i += 2
            if escaped in _CLASSES:
                out.append(_CLASSES[escaped] if in_class else f"[{_CLASSES[escaped]}]")
            elif escaped in _NEGATED and not in_class:
                out.append(f"[^{_CLASSES[_NEGATED[escaped]]}]")
            elif escaped in _KEPT or escaped.isalnum() or (escaped in "[]" and in_class):
                out.append("\\" + escaped)
            else:
                hex_escape = f"\\x{ord(escaped):02X}"
                out.append(hex_escape if in_class else f"[{hex_escape}]")
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        out.append(char)
        i += 1
    return "".join(out)


def _tighten(grammar: str) -> str:
    lines = []
    for line in grammar.splitlines():
        if line.startswith("space ::="):
            line = 'space ::= " "?'
        elif line.startswith(_LOOSE_CHAR):
            line = _STRICT_CHAR + line[len(_LOOSE_CHAR) :]
        lines.append(line)
    return "\n".join(lines) + "\n"
