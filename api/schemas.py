"""Request and response bodies, named by role (``XCreate``, ``XPublic`` …).

Pydantic lives here, at the edge; the libraries hand back their own dataclasses and dicts, which
the routes pour into these. Every input is bounded (lengths, ranges) so that a request cannot
ask for unbounded work. Booleans and integers in bodies are strict (``StrictBool``,
``StrictInt``): ``0``, ``1`` or ``"yes"`` for a boolean, ``"5"`` or ``5.0`` for an integer are
not the JSON types the document promises, and are a 422.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    model_validator,
)

from appliance.errors import ConfigError
from appliance.es.stats import check_time

from .tokens import Role

__all__ = [
    "BridgeMirrorCreate",
    "BridgeMirrorPublic",
    "InterfacePublic",
    "MirrorWritten",
    "OvsMirrorCreate",
    "OvsMirrorPublic",
    "VmPublic",
    "RuleDiffPublic",
    "PolicyEntries",
    "PolicyEntry",
    "SourceCreate",
    "SourcePublic",
    "SourceUpdate",
    "PROBLEM_RESPONSES",
    "TimeBound",
    "Problem",
    "CheckPublic",
    "DoctorPublic",
    "DryRunRequest",
    "DryRunResult",
    "FindingsPage",
    "Health",
    "JobAccepted",
    "JobPublic",
    "LocalRuleFilePublic",
    "LocalRuleUpdate",
    "LocalRuleWritten",
    "PolicyCheck",
    "PolicyPublic",
    "PolicyValid",
    "Readiness",
    "RollbackRequest",
    "RulePublic",
    "RuleStatsPublic",
    "RulesPage",
    "StatusPublic",
    "TokenCreate",
    "TokenCreated",
    "TokenPublic",
    "UpdateRequest",
    "VersionsPublic",
]


def _time_bound(value: str | None) -> str | None:
    # An empty bound stays "" here (routes make it None): a Query's max_length is checked after
    # this validator, on its result, and None has no length.
    if not value:
        return value
    try:
        return check_time(value)
    except ConfigError as exc:
        raise ValueError(exc.message) from None


# A time bound of a search: date math (now-24h, now-7d/d) or ISO 8601; "" for none (a 422 else).
TimeBound = Annotated[str | None, AfterValidator(_time_bound)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(BaseModel):
    """RFC 9457 problem details (``application/problem+json``)."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str
    errors: list[dict[str, Any]] | None = None
    hint: str | None = None


_PROBLEM: dict[str, Any] = {"model": Problem, "content": {"application/problem+json": {
    "schema": {"$ref": "#/components/schemas/Problem"}}}}
# Documented on every route (FastAPI then leaves out its own 422 schema, which we never send).
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {**_PROBLEM, "description": text} for status, text in (
        (400, "the body is not valid JSON"), (401, "no valid token"),
        (403, "the token's role is not enough"), (404, "no such resource"),
        (405, "method not allowed (see Allow)"), (409, "conflicts with the ruleset's state"),
        (413, "the body is too large"), (422, "invalid request"),
        (429, "too many failed authentications"), (500, "internal error"),
        (503, "a dependency (engine, Elasticsearch) is unavailable or not configured"))}


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class CheckPublic(BaseModel):
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    required: bool = True


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    checks: list[CheckPublic]


class StatusPublic(BaseModel):
    version: str
    sensor: str
    api_uptime_seconds: float
    engine: dict[str, Any]
    ruleset: dict[str, Any]


class TokenCreate(_In):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.@-]{0,63}$")
    role: Role


class TokenPublic(BaseModel):
    id: str
    name: str
    role: Role
    created: str
    revoked: str | None = None


class TokenCreated(TokenPublic):
    token: str = Field(description="the token itself: shown once, stored only as a hash")


class RulePublic(BaseModel):
    sid: int
    gid: int
    rev: int
    msg: str
    enabled: bool
    action: str
    classtype: str | None
    metadata: dict[str, list[str]]
    source: str | None = Field(None, description="the rule source it came from")


class RulesPage(BaseModel):
    version: str
    total: int
    offset: int
    limit: int
    items: list[RulePublic]


class RuleDiffPublic(BaseModel):
    old: str
    new: str
    counts: dict[str, int]
    sids: dict[str, list[int]]


class VersionsPublic(BaseModel):
    active: str | None
    versions: list[dict[str, Any]]


class UpdateRequest(_In):
    why: str = Field(default="API update", max_length=200)
    offline: StrictBool | None = None
    allow_shrink: StrictBool = Field(
        default=False, description="let this update through the shrink guard (a candidate "
        "losing more than rules.max_shrink of the active version's enabled rules)")
    if_changed: StrictBool = Field(default=False, description="make no new version when the "
                                   "candidate equals the active one (outcome 'unchanged')")


class RollbackRequest(_In):
    version: str | None = Field(default=None, pattern=r"^\d{1,6}$")


class JobAccepted(BaseModel):
    job_id: str
    location: str


class JobPublic(BaseModel):
    id: str
    kind: str
    requested_by: str
    created: str
    state: Literal["queued", "running", "succeeded", "failed"]
    started: str | None
    finished: str | None
    progress: list[dict[str, Any]]
    report: dict[str, Any] | None
    error: str | None


class LocalRuleFilePublic(BaseModel):
    name: str
    rules: int
    enabled: int


class LocalRuleUpdate(_In):
    content: str = Field(min_length=1, description="the rule file's text")


class LocalRuleWritten(LocalRuleFilePublic):
    validated_seconds: float
    note: str = "takes effect with the next rule update"


class PolicyPublic(BaseModel):
    configured: bool
    path: str | None = None
    policy: dict[str, Any] | None = None


class PolicyCheck(_In):
    yaml: str | None = Field(default=None, description="the policy file's text")
    policy: dict[str, Any] | None = Field(default=None, description="or the policy as JSON")


class PolicyValid(BaseModel):
    valid: Literal[True] = True
    groups: int
    rules: int


class DryRunRequest(PolicyCheck):
    eve_path: str | None = Field(default=None, max_length=4096,
                                 description="an EVE file under the state directory")
    eve: str | None = Field(default=None, description="EVE JSON lines")
    max_findings: StrictInt = Field(default=1000, ge=1, le=10_000)


class DryRunResult(BaseModel):
    total: int
    findings: list[dict[str, Any]]


class FindingsPage(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[dict[str, Any]]


class DoctorPublic(BaseModel):
    ok: bool
    checks: list[CheckPublic]


class SourcePublic(BaseModel):
    name: str
    location: str = Field(description="credentials in a URL are masked")
    kind: str
    enabled: bool
    auth_header: bool = Field(description="whether an auth header is stored (never shown)")


class SourceCreate(_In):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
    location: str = Field(min_length=1, max_length=4096,
                          description="https:// or file:// URL, or a local path")
    http_header: str | None = Field(default=None, max_length=4096,
                                    pattern=r"^[A-Za-z0-9-]+: ?[^\r\n]+$",
                                    description="e.g. 'Authorization: Bearer …' (write-only)")


class SourceUpdate(_In):
    enabled: StrictBool


class PolicyEntry(_In):
    kind: Literal["enable", "disable", "modify", "drop"]
    entry: str = Field(min_length=1, max_length=1000, pattern=r"^[^\r\n]+$",
                       description='a sid, gid:sid, re:REGEX, group:FILE, "metadata: K V"; '
                       'modify: MATCHER "FROM" "TO"')
    remove: StrictBool = False


class PolicyEntries(BaseModel):
    enable: list[str]
    disable: list[str]
    modify: list[str]
    drop: list[str]


class RuleHitsPublic(BaseModel):
    sid: int
    msg: str
    count: int


class NeverFiredPublic(BaseModel):
    sid: int
    msg: str


class PairHitsPublic(BaseModel):
    source_vm: str | None = Field(description="None: no known VM at this end")
    destination_vm: str | None
    count: int
    rules: list[RuleHitsPublic] = Field(description="the pair's most frequent rules")


class RuleStatsPublic(BaseModel):
    namespace: str
    since: str | None
    until: str | None
    version: str | None = Field(description="the active ruleset version the enabled rules are of")
    alerts: int = Field(description="alerts in the window")
    rules_fired: int = Field(description="distinct sids that fired in the window")
    enabled: int = Field(description="enabled rules in the active ruleset")
    top: list[RuleHitsPublic] = Field(description="rules by alert count, most first")
    never_fired_total: int
    never_fired: list[NeverFiredPublic] = Field(description="enabled rules without an alert, "
                                                "by sid (at most limit)")
    pairs_total: int
    pairs: list[PairHitsPublic] = Field(description="source VM → destination VM by alert count")
    fired_truncated: bool = Field(description="too many (pair, sid) combinations to read all: "
                                  "pairs and never_fired are partial")


# Interface, bridge and OVSDB names as OVS and Linux take them (IFNAMSIZ 16 bounds Linux names).
IfName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,15}$")]
OvsName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$")]
ExternalId = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]+$")]


class InterfacePublic(BaseModel):
    name: str
    role: Literal["capture"]
    exists: bool
    index: int | None = None
    up: bool | None = None
    promisc: bool | None = None
    mtu: int | None = None
    operstate: str | None = None
    addresses: list[str] = Field(default=[], description="a capture NIC should have none")
    statistics: dict[str, int] = Field(default={}, description="the kernel's link counters")


class TunnelCreate(_In):
    kind: Literal["gre", "erspan"]
    remote_ip: IPv4Address | IPv6Address
    key: StrictInt | None = Field(default=None, ge=0, lt=1 << 32,
                            description="GRE key / ERSPAN session id")


class OvsMirrorCreate(_In):
    """An Open vSwitch mirror session: what it selects (one or more kinds) and exactly one
    output. Creating it again with the same name updates it in place (idempotent)."""

    name: OvsName = "lateral"
    bridge: OvsName
    select_all: StrictBool = False
    ifaces: list[OvsName] = Field(default=[], max_length=256,
                                  description="VM ports by interface name")
    iface_ids: list[ExternalId] = Field(default=[], max_length=256,
                                        description="VM ports by external_ids:iface-id")
    vm_uuids: list[ExternalId] = Field(default=[], max_length=256,
                                       description="VM ports by external_ids:vm-uuid")
    vlans: list[Annotated[StrictInt, Field(ge=0, le=4095)]] = Field(default=[], max_length=4096)
    output_port: OvsName | None = Field(default=None, description="the capture NIC's port")
    output_vlan: StrictInt | None = Field(default=None, ge=1, le=4095)
    output_tunnel: TunnelCreate | None = None
    purge_flows: StrictBool = Field(default=False, description="drop the local switch's "
                                    "cached datapath flows after the change (busy flows follow "
                                    "at once)")

    @model_validator(mode="after")
    def _one_output_some_selection(self) -> OvsMirrorCreate:
        outputs = (self.output_port, self.output_vlan, self.output_tunnel)
        if sum(o is not None for o in outputs) != 1:
            raise ValueError("exactly one of output_port, output_vlan, output_tunnel")
        if not (self.select_all or self.ifaces or self.iface_ids or self.vm_uuids
                or self.vlans):
            raise ValueError("select something: select_all, ifaces, iface_ids, vm_uuids or "
                             "vlans")
        return self


class OvsMirrorPublic(BaseModel):
    name: str
    bridge: str
    uuid: str
    selection: str
    output: str
    select_all: bool
    select_src: list[str]
    select_dst: list[str]
    select_vlans: list[int]
    output_port: str | None
    output_vlan: int | None
    statistics: dict[str, int]
    external_ids: dict[str, str]


class MirrorWritten(BaseModel):
    action: Literal["created", "updated", "unchanged"]
    mirror: OvsMirrorPublic


class BridgeMirrorCreate(_In):
    """Linux-bridge taps mirrored to the capture NIC with tc mirred (idempotent)."""

    taps: list[IfName] = Field(min_length=1, max_length=256)
    output: IfName = Field(description="where the copies go (the capture NIC, or a veth to it)")
    ingress_only: StrictBool = Field(default=False, description="only what each tap's VM sends")


class BridgeMirrorPublic(BaseModel):
    tap: str
    capture: str
    directions: list[str]


class VmPublic(BaseModel):
    name: str
    uuid: str | None = None
    iface_id: str | None = None
    host: str | None = None
    macs: list[str] = []
    ips: list[str] = []
    labels: dict[str, str] = {}
