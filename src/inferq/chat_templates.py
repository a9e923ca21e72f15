"""Chat templates for models whose GGUF does not embed one.

The bundled Gemma 3 270M GGUF carries no `tokenizer.chat_template`; this is Gemma 3's own
template (from its Hugging Face tokenizer_config.json), text-only.
"""

from __future__ import annotations

GEMMA3 = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {{- message['content'] | trim }}
    {{- '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\\n' }}
{%- endif -%}
"""

BY_ARCHITECTURE = {"gemma3": GEMMA3}


def template_for(metadata: dict[str, str]) -> str | None:
    """The GGUF's own template, else a known one for its architecture."""
    embedded = metadata.get("tokenizer.chat_template")
    if embedded:
        return embedded
    return BY_ARCHITECTURE.get(metadata.get("general.architecture", ""))
