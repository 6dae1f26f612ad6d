"""The ruleset: list and search, versions, updates (as jobs), rollback, local rule files."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response

from appliance.es.stats import MAX_LIMIT, rule_stats_for
from rules import Rule, Updater
from rules.diff import diff

from .._adapters import LocalRules, matches, rule_store, ruleset
from ..deps import Analyst, Operator, SettingsDep, StateDep
from ..schemas import (
    JobAccepted,
    LocalRuleFilePublic,
    LocalRuleUpdate,
    LocalRuleWritten,
    RollbackRequest,
    RuleDiffPublic,
    RulePublic,
    RulesPage,
    RuleStatsPublic,
    TimeBound,
    UpdateRequest,
    VersionsPublic,
)

router = APIRouter(prefix="/rules", tags=["rules"])

LocalName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\.rules$")]


def _public(rule: Rule, source: str | None) -> RulePublic:
    return RulePublic(sid=rule.sid, gid=rule.gid, rev=rule.rev, msg=rule.msg,
                      enabled=rule.enabled, action=rule.action, classtype=rule.classtype,
                      metadata={k: list(v) for k, v in rule.metadata.items()}, source=source)


@router.get("", response_model=RulesPage)
def list_rules(
    settings: SettingsDep, _who: Analyst,
    q: Annotated[str | None, Query(max_length=200,
                                   description="regex on msg, sid, classtype, metadata")] = None,
    state: Literal["enabled", "disabled", "all"] = "enabled",
    version: Annotated[str | None, Query(pattern=r"^\d{1,6}$")] = None,
    source: Annotated[str | None, Query(max_length=64,
                                        description="only rules from this source")] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> RulesPage:
    """Rules of the active (or a given) version, filtered, one page; each names the source it
    came from (null for versions made before Lateral recorded sources)."""
    try:
        pattern = re.compile(q, re.IGNORECASE) if q else None
    except re.error as exc:
        raise HTTPException(422, {"detail": f"q is not a valid regular expression: {exc}",
                                  "errors": [{"loc": ["query", "q"], "msg": str(exc)}]}) from None
    store = rule_store(settings)
    vid, rules = ruleset(store, version)
    origins = store.origins(vid)
    selected = [r for r in rules if (state == "all" or r.enabled == (state == "enabled"))
                and (pattern is None or matches(r, pattern))
                and (source is None or origins.source_of(r.sid) == source)]
    return RulesPage(version=vid, total=len(selected), offset=offset, limit=limit,
                     items=[_public(r, origins.source_of(r.sid))
                            for r in selected[offset:offset + limit]])


@router.get("/stats", response_model=RuleStatsPublic)
def stats(
    settings: SettingsDep, _who: Analyst,
    since: Annotated[TimeBound, Query(max_length=64, description="date math (now-24h, "
                                      "now-7d/d) or ISO 8601; empty: no lower bound")] = "now-24h",
    until: Annotated[TimeBound, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="rows per list")] = 20,
) -> RuleStatsPublic:
    """Rule hit statistics from Elasticsearch: the rules that fire most, the enabled rules of the
    active ruleset that never fired, and alerts per source VM → destination VM."""
    result = rule_stats_for(settings, since=since or None, until=until or None, limit=limit,
                            rules=ruleset(rule_store(settings), None))
    return RuleStatsPublic.model_validate(result.to_dict())


@router.get("/versions", response_model=VersionsPublic)
def versions(settings: SettingsDep, _who: Analyst) -> VersionsPublic:
    """The kept versions (oldest first) and the active one."""
    store = rule_store(settings)
    return VersionsPublic(active=store.active_id(),
                          versions=[m.to_dict() for m in store.manifests()])


@router.get("/diff", response_model=RuleDiffPublic)
def version_diff(
    settings: SettingsDep, _who: Analyst,
    old: Annotated[str, Query(pattern=r"^\d{1,6}$")],
    new: Annotated[str | None, Query(pattern=r"^\d{1,6}$",
                                     description="default: the active version")] = None,
    limit: Annotated[int, Query(ge=0, le=10_000, description="sids listed per kind")] = 100,
) -> RuleDiffPublic:
    """What changed between two versions: counts, and the sids of each kind of change."""
    store = rule_store(settings)
    old_id, old_rules = ruleset(store, old)
    new_id, new_rules = ruleset(store, new)
    d = diff(old_rules, new_rules)
    return RuleDiffPublic(
        old=old_id, new=new_id, counts=d.counts(),
        sids={"added": [r.sid for r in d.added][:limit],
              "removed": [r.sid for r in d.removed][:limit],
              "changed": [n.sid for _, n in d.changed][:limit],
              "enabled": [r.sid for r in d.enabled][:limit],
              "disabled": [r.sid for r in d.disabled][:limit]})


@router.post("/update", response_model=JobAccepted, status_code=202)
def update(body: UpdateRequest, request: Request, response: Response, state: StateDep,
           who: Operator) -> JobAccepted:
    """Start an update (fetch, validate, canary, activate, reload) as a job."""
    settings, requester = state.settings, f"api:{who.name}"

    def work(progress: Any) -> dict[str, Any]:
        report = Updater(settings).update(
            who=requester, why=body.why, offline=body.offline,
            allow_shrink=body.allow_shrink, skip_unchanged=body.if_changed,
            on_step=lambda step: progress({"name": step.name, "ok": step.ok,
                                           "seconds": round(step.seconds, 2),
                                           "detail": step.detail}))
        return report.summary()

    job = state.jobs.submit("rules.update", requester, work)
    request.state.audit_summary = f"rules update job {job.id}: {body.why}"
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobAccepted(job_id=job.id, location=f"/jobs/{job.id}")


@router.post("/rollback")
def rollback(body: RollbackRequest, request: Request, settings: SettingsDep,
             who: Operator) -> dict[str, Any]:
    """Activate an earlier version (default: the previous one) and reload the engine."""
    request.state.audit_summary = f"rollback to {body.version or 'previous'}"
    return Updater(settings).rollback(body.version, who=f"api:{who.name}").summary()


@router.get("/local", response_model=list[LocalRuleFilePublic])
def local_files(settings: SettingsDep, _who: Analyst) -> list[LocalRuleFilePublic]:
    """Local rule files (always part of the next update)."""
    return [LocalRuleFilePublic(name=name, rules=len(rules), enabled=sum(r.enabled for r in rules))
            for name, rules in LocalRules(settings).files()]


@router.get("/local/{name}", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
def local_file(name: LocalName, settings: SettingsDep, _who: Analyst) -> Response:
    """One local rule file's text."""
    try:
        text = LocalRules(settings).read(name)
    except FileNotFoundError:
        raise HTTPException(404, f"no local rule file {name}") from None
    return Response(text, media_type="text/plain; charset=utf-8")


@router.put("/local/{name}", response_model=LocalRuleWritten)
def put_local_file(name: LocalName, body: LocalRuleUpdate, request: Request,
                   response: Response, settings: SettingsDep,
                   _who: Operator) -> LocalRuleWritten:
    """Create or replace a local rule file once Suricata accepts every rule in it (else 422)."""
    local = LocalRules(settings)
    rules, report = local.validate(body.content)
    request.state.audit_summary = f"local rule file {name}: {len(rules)} rule(s)"
    if not report.ok or not rules:
        errors = [{"line": f.line, "sid": f.sid, "reason": f.reason}
                  for f in report.rule_failures]
        if not errors:
            reason = "no rules in the file" if not rules else "; ".join(report.errors[-3:])
            errors = [{"line": None, "sid": None, "reason": reason}]
        detail = "; ".join(f"line {e['line']}: {e['reason']}" for e in errors[:5])
        raise HTTPException(422, {"detail": f"Suricata rejected {name}: {detail}",
                                  "errors": errors})
    if local.write(name, body.content):
        response.status_code = 201
    return LocalRuleWritten(name=name, rules=len(rules), enabled=sum(r.enabled for r in rules),
                            validated_seconds=round(report.seconds, 2))


@router.delete("/local/{name}", status_code=204, response_class=Response)
def delete_local_file(name: LocalName, request: Request, settings: SettingsDep,
                      _who: Operator) -> Response:
    """Remove a local rule file (its rules leave with the next update)."""
    request.state.audit_summary = f"removed local rule file {name}"
    if not LocalRules(settings).delete(name):
        raise HTTPException(404, f"no local rule file {name}")
    return Response(status_code=204)
