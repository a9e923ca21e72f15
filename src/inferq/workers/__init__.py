"""Celery tasks, the engine interface and the engines."""
