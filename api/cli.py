"""``lateral api …``: serve the control API, manage its tokens.

Registered by ``appliance.cli`` with :func:`register`. ``api token create`` is also how the
first admin token is made (``lateral api token create --role admin --name bootstrap``): it
prints the token once, to stdout; nothing can show it again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from appliance.errors import ConfigError

from .settings import ApiSettings, api_paths, load_config
from .tokens import Role, TokenStore

__all__ = ["register"]


def _config(args: argparse.Namespace) -> tuple[Any, ApiSettings]:
    return load_config(Path(args.config) if args.config else None)


def _store(args: argparse.Namespace) -> TokenStore:
    settings, api = _config(args)
    return TokenStore(api_paths(settings, api).token_file)


def _cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    settings, api = _config(args)
    serve(settings, api, host=args.host, port=args.port)
    return 0


def _cmd_token_create(args: argparse.Namespace) -> int:
    record, token = _store(args).create(args.name, Role(args.role))
    print(token)
    print(f"token {record.id} ({record.name}, {record.role.value}): shown once, stored hashed",
          file=sys.stderr)
    return 0


def _cmd_token_list(args: argparse.Namespace) -> int:
    for r in _store(args).list():
        state = f"revoked {r.revoked}" if r.revoked else "active"
        print(f"{r.id}  {r.role.value:<8}  {r.created}  {state:<28}  {r.name}")
    return 0


def _cmd_token_revoke(args: argparse.Namespace) -> int:
    if _store(args).revoke(args.id) is None:
        raise ConfigError(f"no active token {args.id}", hint="`lateral api token list`")
    print(f"revoked {args.id}")
    return 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``api`` and its subcommands to ``lateral``'s subparsers."""
    p = subparsers.add_parser("api", help="the control API: serve it, manage its tokens")
    sub = p.add_subparsers(dest="api_command", metavar="ACTION", required=True,
                           parser_class=type(p))

    def config_arg(c: argparse.ArgumentParser, required: bool = False) -> None:
        c.add_argument("--config", metavar="FILE", required=required,
                       help="Lateral's YAML configuration (with its api: section)")

    c = sub.add_parser("serve", help="serve the API over TLS")
    config_arg(c, required=True)
    c.add_argument("--host", help="address to listen on (default: api.host, 127.0.0.1)")
    c.add_argument("--port", type=int, help="port (default: api.port, 8443)")
    c.set_defaults(func=_cmd_serve)

    t = sub.add_parser("token", help="create, list and revoke API tokens")
    tsub = t.add_subparsers(dest="token_command", metavar="ACTION", required=True,
                            parser_class=type(p))
    c = tsub.add_parser("create", help="a new token, printed once")
    c.add_argument("--role", required=True, choices=[r.value for r in Role])
    c.add_argument("--name", required=True)
    config_arg(c)
    c.set_defaults(func=_cmd_token_create)
    c = tsub.add_parser("list", help="tokens (never their secrets)")
    config_arg(c)
    c.set_defaults(func=_cmd_token_list)
    c = tsub.add_parser("revoke", help="revoke a token by id")
    c.add_argument("id")
    config_arg(c)
    c.set_defaults(func=_cmd_token_revoke)
