"""inferq: a message-queue-driven LLM inference job system."""

__version__ = "0.1.0"
