"""The one settings object, shared by the API, the workers and the CLI."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from inferq.auth.tiers import DEFAULT_TIERS, Tier

Environment = Literal["development", "test", "production"]


class Settings(BaseSettings):
    """Every knob of inferq; each field reads the env var `INFERQ_<NAME>`."""

    model_config = SettingsConfigDict(
        env_prefix="INFERQ_", env_file=".env", extra="ignore", use_attribute_docstrings=True
    )

    env: Environment = "development"
    """development, test or production; `INFERQ_AUTH=off` is refused outside development."""
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/inferq"
    """PostgreSQL, through asyncpg: the record of every job, tenant and session."""
    database_pool_size: int = Field(default=30, ge=1)
    """Connections a process keeps, plus 10 for bursts (10 reconnected per request under load)."""
    database_ping_idle_s: float = Field(default=10.0, ge=0)
    """A pooled connection idle this long is pinged before use (0: before every use)."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis: token events, cancel flags, leases, caches, limits, worker registry."""
    broker_url: str | None = Field(
        default=None, description="Celery broker; defaults to redis_url."
    )

    default_model: str = "gemma-3-270m"
    """The model /ready checks for and `inferq up` serves."""
    model_dir: Path = Path.home() / ".cache" / "inferq" / "models"
    """Where the bundled GGUF is assembled and MLX conversions are cached."""
    context_length: int = Field(default=8192, ge=256, description="n_ctx of llama.cpp workers.")
    n_threads: int | None = Field(default=None, description="llama.cpp threads; None = all cores.")

    max_body_bytes: int = 1024 * 1024
    """Larger request bodies get 413."""
    event_log_ttl_s: int = Field(default=3600, description="How long a job's token log lives.")
    cancel_flag_ttl_s: int = 3600
    """How long a cancel request is kept for its worker to see."""
    worker_heartbeat_s: float = Field(default=2.0, gt=0, description="At most 2 s (issue 4).")
    worker_ttl_s: float = Field(default=6.0, gt=0)
    """A worker whose heartbeat is older than this is gone."""
    worker_slots: int = Field(default=8, ge=1, le=64, description="Jobs a worker runs at once.")
    worker_device: str | None = Field(
        default=None, description="cpu, cuda, metal or a host URL; None = the engine's default."
    )
    # Model registry (inferq.registry; docs/registry.md): a worker's pool and LoRA adapters,
    # and the circuit breaker every pool has.
    worker_pool: str = Field(default="", pattern=r"^[A-Za-z0-9_-]{0,32}$")
    """A named pool of workers for one model version (its own queue)."""
    worker_adapters: str = Field(default="", description="Comma-separated adapter names.")
    breaker_failures: int = Field(default=5, ge=1, description="Consecutive failures to open.")
    breaker_error_rate: float = Field(default=0.5, gt=0.0, le=1.0)
    """Error rate over the window that opens a breaker."""
    breaker_window_s: float = Field(default=60.0, gt=0)
    """The window of the error-rate rule."""
    breaker_min_requests: int = Field(default=20, ge=1, description="Before the rate rule acts.")
    breaker_cooldown_s: float = Field(default=30.0, gt=0, description="Open, then one probe.")
    breaker_watch_s: float = Field(default=0.5, gt=0, description="Job outcomes read this often.")
    llamacpp_exact_batching: bool = Field(
        default=True,
        description="Use only llama.cpp kernels that compute a sequence the same at any batch "
        "size, so greedy output is bit-identical to running alone; False allows the tiled "
        "matmul (faster prompts) and an f16 KV cache, inexact in batches.",
    )

    # Reliability (docs/reliability.md): leases, requeues, retries through outages.
    max_attempts: int = Field(default=3, ge=1, description="Runs of a job before worker_lost.")
    lease_ttl_s: float = Field(default=6.0, gt=0, description="An unrenewed lease lasts this long.")
    lease_renew_s: float = Field(default=1.5, gt=0)
    """How often a worker renews the leases of its running jobs."""
    reconcile_interval_s: float = Field(default=1.0, gt=0)
    """How often lost jobs are looked for."""
    queue_scan_interval_s: float = Field(
        default=5.0, gt=0, description="How often queued jobs are checked against the broker."
    )
    redis_retry_s: float = Field(
        default=60.0, description="How long a worker retries Redis before abandoning an attempt."
    )
    final_write_retry_s: float = Field(
        default=600.0, description="How long a worker retries its final PostgreSQL write."
    )

    # WebSocket chat (/v1/ws): limits per socket, keepalive and idle timeout.
    ws_max_message_bytes: int = Field(default=64 * 1024, ge=1024)
    """A larger WebSocket message closes the socket with 1009."""
    ws_send_queue_size: int = Field(default=512, ge=4, description="Queued frames per socket.")
    ws_max_streams: int = Field(default=16, ge=1, description="Concurrent chats per socket.")
    ws_ping_interval_s: float = Field(default=20.0, gt=0)
    """Client silence after which the server pings."""
    ws_idle_timeout_s: float = Field(default=60.0, gt=0)
    """An idle socket with no chat running is closed after this."""

    # OpenAI- and Ollama-compatible surfaces.
    cancel_on_disconnect: bool = Field(
        default=True, description="A client that leaves before the end cancels its job(s)."
    )
    idempotency_ttl_s: int = Field(default=24 * 3600, description="Idempotency-Key lifetime.")
    request_id_ttl_s: int = Field(
        default=3600, description="Longest a request id stays claimed by an unfinished job."
    )
    embeddings_enabled: bool = Field(
        default=True, description="Load all-MiniLM-L6-v2 in the API for /v1/embeddings."
    )

    shutdown_grace_s: int = Field(
        default=30,
        description="How long a stopping API lets streams drain; `inferq up` kills a child "
        "still running 5 s after that.",
    )
    # Response caches (docs/benchmarks.md "Caches"): L1 exact in Redis, L2 semantic.
    cache_enabled: bool = Field(default=True, description="Look up and fill the caches.")
    cache_ttl_s: int = Field(default=86400, ge=1, description="Default life of a cached answer.")
    cache_max_ttl_s: int = Field(default=30 * 86400, ge=1, description="Cap on a request's ttl.")
    cache_max_entries_per_tenant: int = Field(
        default=100_000, ge=1, description="L1 answers kept per tenant; the oldest go first."
    )
    cache_semantic_enabled: bool = Field(
        default=True, description="Load all-MiniLM-L6-v2 in the API for the L2 cache."
    )
    cache_semantic_threshold: float = Field(
        default=0.85, gt=0.0, le=1.0, description="Cosine at or above which L2 may answer."
    )
    cache_resync_s: float = Field(
        default=30.0, gt=0, description="Backstop re-read of new L2 entries from PostgreSQL."
    )
    cache_semantic_exact_max: int = Field(
        default=20_000,
        ge=0,
        description="L2 partitions up to this size are searched exactly; larger ones by cells "
        "(an inverted file trained in a thread).",
    )
    cache_semantic_probes: int = Field(
        default=16, ge=1, description="Cells an L2 search scans in a partition past exact_max."
    )

    # Authentication, rate limits and admission (inferq.auth; docs/auth.md).
    auth: Literal["on", "off"] = Field(default="on", description="off: development only.")
    auth_cache_ttl_s: float = Field(
        default=5.0,
        ge=0,
        description="How long a verified API key is trusted without a database read; a "
        "revocation made outside this API process takes up to this long (0: no cache).",
    )
    dev_api_key_file: Path = Field(
        default=Path.home() / ".cache" / "inferq" / "dev-api-key",
        description="Where `inferq up` keeps the development key it prints (development only).",
    )
    jwt_algorithm: Literal["HS256", "RS256"] | None = Field(
        default=None, description="Fixed here, never taken from a token; None: no JWTs."
    )
    jwt_secret: str | None = Field(default=None, description="The HS256 secret.")
    jwt_public_key_file: Path | None = Field(default=None, description="RS256: a PEM file.")
    jwt_jwks_file: Path | None = Field(default=None, description="RS256: a JWKS file.")
    jwt_audience: str = "inferq"
    """Required `aud` of JWTs."""
    jwt_issuer: str | None = None
    """Required `iss` of JWTs; None = not checked."""
    jwt_tenant_claim: str = "tenant"
    """The JWT claim that names the tenant."""
    jwt_leeway_s: int = Field(default=30, ge=0, le=300)
    """Clock skew allowed on `exp`."""
    tiers: dict[str, Tier] = Field(default_factory=lambda: dict(DEFAULT_TIERS))
    """Rate-limit tiers by name (JSON): requests and tokens per window, concurrency, priority."""
    default_tier: str = "standard"
    """The tier of a tenant that names none."""
    max_queue_depth: int = Field(default=1000, ge=1, description="Waiting jobs per queue.")
    kv_high_water: float = Field(default=0.9, gt=0.0, le=1.0)
    """KV-cache use above which lower tiers are shed when requests wait."""
    shed_below_priority: int = Field(default=2, description="Tiers below are shed first.")
    max_prompt_tokens: int = Field(default=0, ge=0, description="0: the model's context.")
    max_tokens_cap: int = Field(default=0, ge=0, description="0: the model's context.")
    max_messages: int = Field(default=512, ge=1)
    """Most messages in one request."""
    webhook_max_attempts: int = Field(default=8, ge=1)
    """Deliveries of an outbound webhook before it is given up."""
    webhook_allow_private: bool = False
    """Allow webhook URLs on loopback, private or link-local addresses (refused otherwise)."""
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    """Timeout of one webhook delivery."""
    webhook_tolerance_s: int = Field(default=300, ge=1, description="Inbound clock skew.")
    webhook_backoff_s: float = Field(default=1.0, gt=0, description="First retry delay.")
    webhook_dev_secret: str = Field(
        default="whsec_aW5mZXJxLWRldmVsb3BtZW50LW9ubHktc2VjcmV0",
        description="Signs webhooks of tenant-less jobs, which exist only with INFERQ_AUTH=off.",
    )
    ws_allowed_origins: list[str] = Field(
        default_factory=list, description="Browser origins besides the API's own."
    )

    api_host: str = "127.0.0.1"
    """Where `inferq api` listens."""
    api_port: int = 8000
    """Where `inferq api` listens."""
    flower_host: str = "127.0.0.1"
    """Where Flower listens."""
    flower_port: int = 5555
    """Where Flower listens."""
    flower_basic_auth: str | None = Field(default=None, description="user:password for Flower.")
    worker_metrics_port: int = Field(
        default=9101, description="First port tried for a worker's /metrics; 0 disables."
    )
    log_level: str = "INFO"
    """JSON logs on stderr, with request id and job id."""

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.max_body_bytes < 1024:
            raise ValueError("INFERQ_MAX_BODY_BYTES must be at least 1024")
        if self.lease_renew_s * 2 > self.lease_ttl_s:
            raise ValueError("INFERQ_LEASE_RENEW_S must be at most half of INFERQ_LEASE_TTL_S")
        if self.auth == "off" and self.env != "development":
            raise ValueError("INFERQ_AUTH=off is refused unless INFERQ_ENV=development")
        if self.default_tier not in self.tiers:
            raise ValueError(f"INFERQ_DEFAULT_TIER '{self.default_tier}' is not in INFERQ_TIERS")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
