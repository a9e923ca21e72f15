"""The `inferq` command: api, worker, flower, up, migrate, models."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from inferq.catalog import BUNDLED_MODEL
from inferq.settings import get_settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inferq", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("api", help="run the HTTP API under uvicorn")
    worker = sub.add_parser("worker", help="run one Celery worker on one engine and model")
    worker.add_argument("--engine", default="llamacpp", choices=["llamacpp", "echo"])
    worker.add_argument("--model", default=BUNDLED_MODEL)
    sub.add_parser("flower", help="run Flower, the Celery monitor")
    up = sub.add_parser("up", help="run the API, a worker and Flower in the foreground")
    up.add_argument("--engine", default="llamacpp")
    up.add_argument("--model", default=BUNDLED_MODEL)
    sub.add_parser("migrate", help="apply database migrations (alembic upgrade head)")
    models = sub.add_parser("models", help="model files")
    models.add_argument("action", choices=["assemble"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = get_settings()
    if args.command == "api":
        import uvicorn

        uvicorn.run(
            "inferq.api.app:create_app",
            factory=True,
            host=settings.api_host,
            port=settings.api_port,
            log_config=None,
            access_log=False,
        )
    elif args.command == "worker":
        from inferq.cli.worker import run_worker

        run_worker(args.engine, args.model)
    elif args.command == "flower":
        return _flower(settings.flower_port)
    elif args.command == "up":
        from inferq.cli.up import run_up

        return run_up(settings, args.engine, args.model)
    elif args.command == "migrate":
        _migrate()
    elif args.command == "models":
        from inferq.bundled import ensure_bundled_model

        print(ensure_bundled_model(settings.model_dir / "gemma-3-270m-q4_k_m.gguf"))
    return 0


def _flower(port: int) -> int:
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "inferq.queue.celery_app:celery_app",
        "flower",
        f"--port={port}",
        "--address=127.0.0.1",
    ]
    if auth := os.environ.get("INFERQ_FLOWER_BASIC_AUTH"):
        argv.append(f"--basic-auth={auth}")
    os.execv(sys.executable, argv)
    return 0


def _migrate() -> None:
    from alembic import command
    from alembic.config import Config

    root = Path(__file__).resolve().parents[3]
    config = Config(str(root / "alembic.ini"))
    command.upgrade(config, "head")


if __name__ == "__main__":
    sys.exit(main())
