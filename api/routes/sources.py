"""Rule sources and the rule policy (enable/disable/modify/drop), both for the next update.

Sources are :class:`rules.sources.Sources` (suricata-update's ``add-source`` for URLs, local
files and directories); an auth header given with a URL is stored by suricata-update and never
shown again: listings say only whether a source has one, and credentials in a URL's userinfo
are masked. The policy entries are :mod:`rules.policy`'s, checked with suricata-update's own
matcher parser (a bad matcher is a 422).
"""

from __future__ import annotations

import urllib.parse
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, Response

from appliance.config import Settings
from appliance.errors import RuleError
from rules import policy as rule_policy
from rules.settings import rules_root, rules_settings
from rules.sources import Source, Sources

from ..deps import Analyst, Operator, SettingsDep
from ..schemas import PolicyEntries, PolicyEntry, SourceCreate, SourcePublic, SourceUpdate

router = APIRouter(prefix="/rules", tags=["rules"])

SourceName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]


def _sources(settings: Settings) -> Sources:
    rules = rules_settings(settings)
    return Sources(settings, rules, rules_root(settings, rules))


def _masked(location: str) -> str:
    parts = urllib.parse.urlsplit(location)
    if parts.username is None and parts.password is None:
        return location
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query,
                                    parts.fragment))


def _public(source: Source) -> SourcePublic:
    return SourcePublic(name=source.name, location=_masked(source.location), kind=source.kind,
                        enabled=source.enabled, auth_header=bool(source.http_header))


@router.get("/sources", response_model=list[SourcePublic])
def list_sources(settings: SettingsDep, _who: Analyst) -> list[SourcePublic]:
    """Configured sources (URL sources first); never an auth header."""
    return [_public(s) for s in _sources(settings).list()]


@router.post("/sources", response_model=SourcePublic, status_code=201)
def add_source(body: SourceCreate, request: Request, settings: SettingsDep,
               _who: Operator) -> SourcePublic:
    """Add a URL (https://, file://) or a local path; fetched by the next update."""
    request.state.audit_summary = f"added rule source {body.name}"
    return _public(_sources(settings).add(body.name, body.location,
                                          http_header=body.http_header))


@router.patch("/sources/{name}", response_model=SourcePublic)
def update_source(name: SourceName, body: SourceUpdate, request: Request,
                  settings: SettingsDep, _who: Operator) -> SourcePublic:
    """Enable or disable a source."""
    request.state.audit_summary = f"{'enabled' if body.enabled else 'disabled'} source {name}"
    sources = _sources(settings)
    if not any(s.name == name for s in sources.list()):
        raise HTTPException(404, f"no rule source {name}")
    return _public(sources.set_enabled(name, body.enabled))


@router.delete("/sources/{name}", status_code=204, response_class=Response)
def remove_source(name: SourceName, request: Request, settings: SettingsDep,
                  _who: Operator) -> Response:
    """Remove a source."""
    request.state.audit_summary = f"removed rule source {name}"
    sources = _sources(settings)
    if not any(s.name == name for s in sources.list()):
        raise HTTPException(404, f"no rule source {name}")
    sources.remove(name)
    return Response(status_code=204)


@router.get("/policy", response_model=PolicyEntries)
def policy_entries(settings: SettingsDep, _who: Analyst) -> PolicyEntries:
    """The enable/disable/modify/drop entries applied by the next update."""
    directory = _sources(settings).dir
    return PolicyEntries(**{kind: rule_policy.entries(directory, kind)
                            for kind in ("enable", "disable", "modify", "drop")})


@router.post("/policy", response_model=PolicyEntries)
def add_policy_entry(body: PolicyEntry, request: Request, settings: SettingsDep,
                     who: Operator) -> PolicyEntries:
    """Add (or, with ``remove``, drop) one entry: a sid, gid:sid, re:REGEX, group:FILE …"""
    request.state.audit_summary = f"{'remove' if body.remove else 'add'} {body.kind} " \
        f"{body.entry!r}"
    directory = _sources(settings).dir
    try:
        if body.remove:
            rule_policy.remove_entry(directory, body.kind, body.entry)
        else:
            rule_policy.add_entry(directory, body.kind, body.entry)
    except RuleError as exc:
        raise HTTPException(422, {"detail": exc.message, "hint": exc.hint}) from None
    return policy_entries(settings, who)
