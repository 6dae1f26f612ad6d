"""One ``APIRouter`` per resource; each route checks its role, calls a library, shapes the answer.

    health    GET /health, /health/ready                       (no token: probes)
    status    GET /status, /metrics                            analyst
    tokens    GET, POST /tokens; DELETE /tokens/{id}           admin
    rules     GET /rules, /rules/stats, /rules/versions, /rules/diff, /rules/local[/{n}]   analyst
              POST /rules/update, /rules/rollback; PUT, DELETE /rules/local/{n}   operator
    sources   GET /rules/sources, /rules/policy                analyst
              POST, PATCH, DELETE /rules/sources[/{n}]; POST /rules/policy   operator
    jobs      GET /jobs/{id}                                   analyst
    policies  GET /policies                                    analyst
              POST /policies/validate, /policies/dry-run       operator
    findings  GET /findings                                    analyst
    capture   GET /capture/interfaces, /capture/mirrors/ovs, /capture/mirrors/bridge,
              /capture/inventory                               analyst
              POST /capture/mirrors/ovs|bridge; DELETE /capture/mirrors/ovs/{n},
              /capture/mirrors/bridge/{tap}                    operator
    doctor    GET /doctor                                      operator
"""

from . import capture, doctor, findings, health, jobs, policies, rules, sources, status, tokens

__all__ = [
    "capture", "doctor", "findings", "health", "jobs", "policies", "rules", "sources", "status",
    "tokens",
]
