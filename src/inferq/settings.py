"""The one settings object, shared by the API, the workers and the CLI."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["development", "test", "production"]


class Settings(BaseSettings):
    """Every knob of inferq; each field reads the env var `INFERQ_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="INFERQ_", env_file=".env", extra="ignore")

    env: Environment = "development"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/inferq"
    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str | None = Field(
        default=None, description="Celery broker; defaults to redis_url."
    )

    default_model: str = "gemma-3-270m"
    model_dir: Path = Path.home() / ".cache" / "inferq" / "models"
    context_length: int = Field(default=8192, ge=256, description="n_ctx of llama.cpp workers.")
    n_threads: int | None = Field(default=None, description="llama.cpp threads; None = all cores.")

    max_body_bytes: int = 1024 * 1024
    event_log_ttl_s: int = Field(default=3600, description="How long a job's token log lives.")
    cancel_flag_ttl_s: int = 3600
    worker_heartbeat_s: float = 5.0
    worker_ttl_s: float = 15.0

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    flower_port: int = 5555
    log_level: str = "INFO"

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.max_body_bytes < 1024:
            raise ValueError("INFERQ_MAX_BODY_BYTES must be at least 1024")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
