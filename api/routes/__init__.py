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
    doctor    GET /doctor                                      operator
"""

from . import doctor, findings, health, jobs, policies, rules, sources, status, tokens

__all__ = [
    "doctor", "findings", "health", "jobs", "policies", "rules", "sources", "status", "tokens",
]
