"""The inter-VM policy: the configured one, validation, and a dry-run on recorded EVE."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter, HTTPException, Request

from appliance.errors import ConfigError
from appliance.policy.model import PolicyFile, load_policy, parse_policy
from appliance.policy.runner import dry_run

from ..deps import Analyst, Operator, SettingsDep
from ..schemas import DryRunRequest, DryRunResult, PolicyCheck, PolicyPublic, PolicyValid

router = APIRouter(prefix="/policies", tags=["policies"])


def _invalid(exc: ConfigError) -> HTTPException:
    lines = exc.message.splitlines()
    return HTTPException(422, {"detail": lines[0] if lines else exc.message,
                               "errors": [{"msg": line.strip()} for line in lines[1:]]})


def _parse(body: PolicyCheck) -> PolicyFile:
    if (body.yaml is None) == (body.policy is None):
        raise HTTPException(422, "give exactly one of yaml (the file's text) or policy (JSON)")
    data: Any = body.policy
    if body.yaml is not None:
        try:
            data = yaml.safe_load(body.yaml)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise HTTPException(422, f"not valid YAML{where}: "
                                f"{getattr(exc, 'problem', None) or 'parse error'}") from None
    try:
        return parse_policy(data if data is not None else {}, "policy")
    except ConfigError as exc:
        raise _invalid(exc) from None


@router.get("", response_model=PolicyPublic)
def current(settings: SettingsDep, _who: Analyst) -> PolicyPublic:
    """The policy file named by ``settings.policy``, validated."""
    if settings.policy is None:
        return PolicyPublic(configured=False)
    policy = load_policy(settings.policy)
    return PolicyPublic(configured=True, path=str(settings.policy),
                        policy=policy.model_dump(mode="json", by_alias=True))


@router.post("/validate", response_model=PolicyValid)
def validate_policy(body: PolicyCheck, request: Request, _who: Operator) -> PolicyValid:
    """Validate a policy (nothing is stored); 422 lists every problem."""
    request.state.audit_summary = "validate a policy"
    policy = _parse(body)
    return PolicyValid(groups=len(policy.groups), rules=len(policy.rules))


@router.post("/dry-run", response_model=DryRunResult)
def dry_run_policy(body: DryRunRequest, request: Request, settings: SettingsDep,
                   _who: Operator) -> DryRunResult:
    """What a policy (given, else the configured one) raises on recorded EVE records."""
    request.state.audit_summary = "policy dry-run"
    if body.yaml is not None or body.policy is not None:
        policy = _parse(body)
    elif settings.policy is not None:
        policy = load_policy(settings.policy)
    else:
        raise HTTPException(422, "no policy given and none configured")
    if (body.eve_path is None) == (body.eve is None):
        raise HTTPException(422, "give exactly one of eve_path or eve (EVE JSON lines)")
    with tempfile.TemporaryDirectory(prefix="lateral-dry-run-") as tmp:
        if body.eve is not None:
            path = Path(tmp) / "eve.json"
            path.write_text(body.eve, encoding="utf-8")
        else:
            path = Path(body.eve_path or "").resolve()
            root = settings.state_dir.resolve()
            if not path.is_relative_to(root):
                raise HTTPException(422, f"eve_path must be under the state directory {root}")
        findings = dry_run(settings, policy, [path])
    return DryRunResult(total=len(findings), findings=findings[: body.max_findings])
