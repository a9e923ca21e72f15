"""Ollama-compatible API: /api/chat, /api/generate, /api/tags, /api/show, /api/ps, /api/embed."""
