"""The FastAPI control plane: schemas at the edge, auth, routers that call into ``appliance``,
``capture`` and ``rules``. It holds no business logic of its own.

Modules, each one concern::

    app        create_app(settings, state=…): routers, handlers, middleware (audit, body limit)
    routes/    one APIRouter per resource; thin: check the role, call a library, shape the answer
    deps       Annotated dependencies: the state, the settings, the caller and its role floor
    schemas    request/response bodies by role (TokenCreate, TokenPublic, Problem …)
    problems   RFC 9457 problem+json for every error; the request body limit
    tokens     hashed API tokens with roles (analyst < operator < admin), atomic token file
    audit      append-only JSONL audit log; failed-authentication token buckets
    jobs       long calls (rule updates) on one worker thread: queued → running → done
    state      ApiState: what one API process holds (no globals)
    settings   ApiSettings: the ``api:`` section of the YAML configuration
    server     uvicorn over TLS (self-signed certificate on first start), optional mTLS
    cli        ``lateral api serve`` and ``lateral api token create|list|revoke``
    _adapters  thin shims where a library has no call of the needed shape yet (see its doc)

Security model: every route but the health probes and the OpenAPI document needs
``Authorization: Bearer <token>``; tokens are shown once and stored as salted scrypt hashes;
failed attempts are limited per client address and audited; every mutating call is audited
before its response leaves; secrets (tokens, Elasticsearch credentials) never appear in a
response (bar the one creating a token), the audit log or the logs.
"""
