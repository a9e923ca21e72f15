"""`inferq keys`: create (the key is printed once), list and revoke API keys; and the
development key `inferq up` prints."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
from datetime import UTC, datetime, timedelta

from inferq.auth import service
from inferq.db.session import make_engine, make_sessionmaker
from inferq.errors import InferqError
from inferq.settings import Settings

DEV_TENANT = "dev"
_DURATION = re.compile(r"^(\d+)([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="API keys: create (shown once), list, revoke")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key (and its tenant if new)")
    create.add_argument("--tenant", required=True)
    create.add_argument(
        "--scopes", default="inference", help="comma-separated: inference,admin,operator"
    )
    create.add_argument("--expires", help="a duration (30d, 12h, 90m) or an ISO date-time")
    create.add_argument("--tier", help="set the tenant's tier (see INFERQ_TIERS)")
    create.add_argument("--name", help="a label for the key")
    listing = actions.add_parser("list", help="the keys of a tenant (prefixes only)")
    listing.add_argument("--tenant", required=True)
    revoke = actions.add_parser("revoke", help="revoke a key by id or prefix")
    revoke.add_argument("key")


def parse_expires(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    match = _DURATION.match(raw)
    if match:
        return datetime.now(UTC) + timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    value = datetime.fromisoformat(raw)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def run_keys(settings: Settings, args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(settings, args))
    except (InferqError, ValueError) as exc:
        print(f"inferq keys: {getattr(exc, 'message', exc)}")
        return 2


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    engine = make_engine(settings)
    try:
        async with make_sessionmaker(engine)() as db:
            if args.action == "create":
                tenant = await service.ensure_tenant(db, settings, args.tenant, args.tier)
                created = await service.create_key(
                    db,
                    tenant,
                    scopes=[s.strip() for s in args.scopes.split(",") if s.strip()],
                    expires_at=parse_expires(args.expires),
                    name=args.name,
                )
                await db.commit()
                print(created.plaintext)
                print(f"# tenant {tenant.name} ({tenant.tier}); shown once, store it now")
            elif args.action == "list":
                found = await service.find_tenant(db, args.tenant)
                for key in await service.list_keys(db, found.id) if found else []:
                    state = "revoked" if key.revoked_at else "active"
                    print(f"{key.id}  iq_{key.prefix}_…  {','.join(key.scopes)}  {state}")
            else:
                revoked = await service.revoke_key(db, args.key, None)
                await db.commit()
                print("revoked" if revoked else "no such active key")
                return 0 if revoked else 1
    finally:
        await engine.dispose()
    return 0


def ensure_dev_key(settings: Settings) -> str | None:
    """The development key (created, or reused from INFERQ_DEV_API_KEY_FILE); None outside
    development."""
    if settings.env != "development" or settings.auth == "off":
        return None
    path = settings.dev_api_key_file
    known = path.read_text().strip() if path.exists() else None
    plaintext = asyncio.run(_ensure_dev_key(settings, known))
    if plaintext != known:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(plaintext + "\n")
    return plaintext


async def _ensure_dev_key(settings: Settings, known: str | None) -> str:
    engine = make_engine(settings)
    try:
        async with make_sessionmaker(engine)() as db:
            if known and await service.key_is_live(db, known):
                return known
            tenant = await service.ensure_tenant(db, settings, DEV_TENANT)
            created = await service.create_key(
                db, tenant, scopes=["inference", "admin", "operator"], name="development"
            )
            await db.commit()
    finally:
        await engine.dispose()
    return created.plaintext
