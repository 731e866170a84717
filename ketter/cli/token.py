"""``ketter token create|list|revoke``: API tokens for machines (docs/access.md).

``create`` prints the secret alone on stdout (``TOKEN=$(ketter token create
…)``) and everything else on stderr; it is never shown again. ``list``
never shows a secret or its hash.
"""

from __future__ import annotations

import argparse
import sys
import time

from ketter.cli.common import add_config_arg, config_from, print_json, table

ROUTES_HELP = (
    "route globs this token may act on, comma-separated, fnmatch patterns on the whole "
    "route name ('dub-*,qc-?'); required with a transfers:* or routes:pause scope. "
    "There is no default: a token covers no route unless named here, and "
    "--routes '*' gives every route, present and future, on purpose"
)
EXPIRES_HELP = (
    "lifetime from now: 90d, 12h, 30m; 'never' (the default without it) makes a token "
    "that works until revoked: give an expiry and rotate (docs/access.md)"
)
COLUMNS = ["name", "state", "scopes", "routes", "created", "by", "expires", "last_used", "revoked"]


def register(commands: argparse._SubParsersAction) -> None:
    from ketter.access.scopes import valid_scopes

    token = commands.add_parser(
        "token", help="API tokens for machines: create, list, revoke (docs/access.md)"
    )
    actions = token.add_subparsers(dest="token_command", metavar="ACTION")
    actions.required = True

    create = actions.add_parser(
        "create",
        help="make a token; prints its secret once, alone on stdout",
        description="Make an API token. Its secret is printed once, alone on stdout; "
        "only its SHA-256 is kept, so it cannot be shown again.",
    )
    add_config_arg(create)
    create.add_argument("name", help="the token's name: 1-64 letters, digits, . _ -")
    create.add_argument(
        "--scopes",
        required=True,
        metavar="LIST",
        help=f"what the token may do, comma-separated: {valid_scopes()}",
    )
    create.add_argument("--routes", metavar="GLOBS", default="", help=ROUTES_HELP)
    create.add_argument("--expires", metavar="DURATION", help=EXPIRES_HELP)
    create.set_defaults(func=create_token)

    listing = actions.add_parser("list", help="every token (revoked ones too), never a secret")
    add_config_arg(listing)
    listing.add_argument("--json", action="store_true", help="print JSON (times as Unix seconds)")
    listing.set_defaults(func=list_tokens)

    revoke = actions.add_parser("revoke", help="revoke a token: it is refused (401) at once")
    add_config_arg(revoke)
    revoke.add_argument("name", help="the token's name (see ketter token list)")
    revoke.set_defaults(func=revoke_token)


def _expires_at(text: str | None, now: float) -> float | None:
    from ketter.config import parse_duration

    if text is None or text.strip().lower() == "never":
        return None
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"--expires: {exc} (90d, 12h; or never)") from None
    if seconds <= 0:
        raise ValueError("--expires: give a lifetime above 0 (90d, 12h; or never)")
    return now + seconds


def create_token(args: argparse.Namespace) -> int:
    from ketter.access import tokens
    from ketter.jobs.requeue import operator
    from ketter.node import Node
    from ketter.store.sqlite_read import iso

    config = config_from(args)
    now = time.time()
    # Checked before the key and the store: a typo writes nothing.
    try:
        expires_at = _expires_at(args.expires, now)
        problem = tokens.name_problem(args.name)
        if problem is not None:
            raise ValueError(problem)
    except ValueError as exc:
        print(f"ketter: {exc}", file=sys.stderr)
        return 2
    node = Node.from_config(config, "token")
    assert node.store is not None
    try:
        secret = tokens.create_token(
            node.store, args.name, args.scopes, args.routes, expires_at, now=now, by=operator()
        )
    except ValueError as exc:  # a scope, a route glob, the expiry
        print(f"ketter: {exc}", file=sys.stderr)
        return 2
    finally:
        node.close()
    print(secret)
    sys.stdout.flush()
    expiry = f"expires {iso(expires_at)}" if expires_at is not None else "never expires"
    print(
        f"token {args.name!r} created ({expiry}). The line above is its secret: store it "
        "now, it cannot be shown again (only its SHA-256 is kept).",
        file=sys.stderr,
    )
    if args.expires is None:  # `--expires never` is a choice made on purpose
        print(
            "note: this token never expires; tokens with --expires (90d) rotated before "
            "they expire are what an audit expects (docs/access.md)",
            file=sys.stderr,
        )
    return 0


def list_tokens(args: argparse.Namespace) -> int:
    from ketter.access import tokens
    from ketter.node import Node
    from ketter.store.sql_read import iso

    config = config_from(args)
    store = Node.from_config(config, "read", open_store=False).open_readonly_store()
    try:
        found = tokens.list_tokens(store)
    finally:
        store.close()
    now = time.time()
    if args.json:
        print_json(
            [
                {
                    "name": t.name,
                    "state": t.state(now),
                    "scopes": list(t.scopes),
                    "routes": list(t.routes),
                    "created_at": t.created_at,
                    "created_by": t.created_by,
                    "expires_at": t.expires_at,
                    "last_used_at": t.last_used_at,
                    "revoked_at": t.revoked_at,
                    "revoked_by": t.revoked_by,
                }
                for t in found
            ]
        )
        return 0
    rows = [
        {
            "name": t.name,
            "state": t.state(now),
            "scopes": ",".join(t.scopes),
            "routes": ",".join(t.routes) or "(none)",
            "created": iso(t.created_at),
            "by": t.created_by,
            "expires": iso(t.expires_at) if t.expires_at is not None else "never",
            "last_used": iso(t.last_used_at),
            "revoked": f"{iso(t.revoked_at)} by {t.revoked_by}" if t.revoked_at else None,
        }
        for t in found
    ]
    print(table(rows, COLUMNS))
    return 0


def revoke_token(args: argparse.Namespace) -> int:
    from ketter.access import tokens
    from ketter.jobs.requeue import operator
    from ketter.node import Node

    config = config_from(args)
    node = Node.from_config(config, "token")
    assert node.store is not None
    try:
        info = tokens.revoke_token(node.store, args.name, now=time.time(), by=operator())
    finally:
        node.close()
    print(f"token {info.name!r} revoked; requests with it are refused from now on")
    return 0
