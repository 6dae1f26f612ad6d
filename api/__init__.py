"""The FastAPI control plane: schemas at the edge, auth, routers that call into ``appliance``,
``capture`` and ``rules``. It holds no business logic of its own.
"""
