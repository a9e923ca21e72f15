"""`inferq models list|register|activate|retire`: the model registry from the terminal.

Talks to PostgreSQL directly (as `inferq migrate` does) and bumps the registry generation in
Redis, so running API processes see the change on their next request.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import redis.asyncio as aioredis

from inferq.db.session import make_engine, make_sessionmaker
from inferq.errors import InferqError
from inferq.registry import admin, repository
from inferq.registry.admin import VersionCreate, version_view
from inferq.registry.service import model_registry, split_name
from inferq.settings import Settings


def _parser(action: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"inferq models {action}")
    if action == "list":
        parser.add_argument("name", nargs="?", help="only this model's versions")
        parser.add_argument("--json", action="store_true")
    elif action == "register":
        parser.add_argument("model", help="name:version, e.g. gemma-3-270m:2.0.0")
        parser.add_argument("--engine", required=True, choices=list(admin.ENGINES))
        parser.add_argument("--weights", help="GGUF file, MLX folder, or engine-side name")
        parser.add_argument("--context-length", type=int, default=2048)
        parser.add_argument("--tag", action="append", default=[])
        parser.add_argument("--description")
        parser.add_argument("--fallback", help="model[:version] served while breakers are open")
        parser.add_argument("--sampling", default="{}", help="default sampling, JSON")
        parser.add_argument("--activate", action="store_true")
    else:
        parser.add_argument("model", help="name:version")
    return parser


def run_models_admin(settings: Settings, action: str, argv: list[str]) -> int:
    args = _parser(action).parse_args(argv)
    try:
        return asyncio.run(_run(settings, action, args))
    except InferqError as exc:
        print(f"error: {exc.message}")
        return 1


async def _run(settings: Settings, action: str, args: argparse.Namespace) -> int:
    engine = make_engine(settings)
    client = aioredis.Redis.from_url(settings.redis_url)
    sessions = make_sessionmaker(engine)
    registry = model_registry(settings, client, sessions)
    try:
        await registry.snapshot()  # seeds a fresh database, as the API does
        async with sessions() as session:
            if action == "list":
                rows = await repository.list_versions(session, args.name)
                _print_list([version_view(r) for r in rows], args.json)
                return 0
            name, version = _pinned(args.model)
            if action == "register":
                body = VersionCreate(
                    name=name, version=version, engine=args.engine, weights=args.weights,
                    context_length=args.context_length, tags=args.tag,
                    description=args.description, fallback=args.fallback,
                    sampling=json.loads(args.sampling), activate=args.activate,
                )  # fmt: skip
                row = await admin.register(session, body)
            elif action == "activate":
                row = await admin.activate(session, name, version)
            else:
                row = await admin.retire(session, name, version)
            await session.commit()
        await registry.changed()
        print(json.dumps(version_view(row), indent=2))
        return 0
    finally:
        await client.aclose()
        await engine.dispose()


def _pinned(model: str) -> tuple[str, str]:
    name, version = split_name(model)
    if version is None:
        raise SystemExit(f"give the model as name:version, not {model!r}")
    return name, version


def _print_list(views: list[dict[str, object]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(views, indent=2))
        return
    print(f"{'MODEL':<32} {'ENGINE':<9} {'STATE':<11} {'CONTEXT':>7}  WEIGHTS")
    for v in views:
        print(f"{v['id']!s:<32} {v['engine']!s:<9} {v['state']!s:<11} {v['context_length']!s:>7}  "
              f"{v['weights'] or '-'}")  # fmt: skip
