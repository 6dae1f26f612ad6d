"""One bulk round trip: spooled EVE lines in, one :class:`Outcome` out.

:class:`Bulker` turns spooled EVE lines into ECS documents and sends them in one bulk request,
returning an :class:`Outcome` per line (stored, duplicate, replaced, to retry, rejected). It keeps
no state between calls; the retry loop, the spool and the dead-letter file belong to the
shipping loop (:mod:`._loop`), which calls it in the host it runs in (the shipper's child
process, or a thread). A whole request that fails with a connection error, a timeout, 429 or
5xx comes back as ``failure`` with every line to retry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any

import orjson
from elastic_transport import TransportError
from elasticsearch import ApiError, Elasticsearch

from ._client import COMPAT_ACCEPT, COMPAT_NDJSON
from .ecs import dataset, doc_id, to_ecs
from .templates import data_stream, setup

__all__ = ["Bulker", "Outcome", "Rejected"]

_HEADERS = {"accept": COMPAT_ACCEPT, "content-type": COMPAT_NDJSON}
_PARAMS = {"filter_path": "errors,items.*.status,items.*.error,items.*._index"}
# Records re-emitted with the same id and newer content (a policy finding's final count):
# on 409 the stored document is replaced, guarded by its seq_no (data streams allow no upsert).
_REPLACEABLE = frozenset({"policy"})


@dataclass(slots=True)
class Rejected:
    """A line Elasticsearch refused for itself (or that is not a JSON object)."""

    line: int
    status: int
    reason: str
    document: Any
    index: str | None = None
    doc_id: str | None = None
    error: Any = None


@dataclass(slots=True)
class Outcome:
    """What one bulk round trip did with each line given (indices into those lines)."""

    shipped: int = 0
    duplicates: int = 0
    replaced: int = 0
    retry: list[int] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    failure: str | None = None  # the whole request failed (retryable); retry holds all lines


class Bulker:
    """Converts and sends; one bulk request per :meth:`send`."""

    def __init__(self, client: Elasticsearch, namespace: str, host: str | None) -> None:
        self.client = client
        self.namespace = namespace
        self.host = host

    def setup(self) -> str | None:
        """Install the index templates; the error message, or None."""
        try:
            setup(self.client)
        except (ApiError, TransportError) as exc:
            return f"installing index templates: {exc}"
        return None

    def send(self, lines: list[bytes]) -> Outcome:
        out = Outcome()
        idx: list[int] = []
        actions: list[bytes] = []
        docs: list[bytes] = []
        kinds: list[str] = []
        for n, line in enumerate(lines):
            try:
                rec = orjson.loads(line)
                if not isinstance(rec, dict):
                    raise TypeError("not a JSON object")
            except (orjson.JSONDecodeError, TypeError) as exc:
                out.rejected.append(Rejected(n, 0, f"unparseable record: {exc}",
                                             line.decode("utf-8", "replace")))
                continue
            kind = dataset(rec)
            idx.append(n)
            kinds.append(kind)
            actions.append(orjson.dumps({"create": {
                "_index": data_stream(kind, self.namespace),
                "_id": doc_id(rec) or blake2b(line, digest_size=16).hexdigest()}}))
            docs.append(orjson.dumps(to_ecs(rec, host=self.host)))
        if not docs:
            return out
        body = b"".join(a + b"\n" + d + b"\n" for a, d in zip(actions, docs, strict=True))
        try:
            resp = self.client.perform_request("PUT", "/_bulk", params=_PARAMS,
                                               headers=_HEADERS, body=body)
        except ApiError as exc:
            status = exc.meta.status
            reason = f"bulk request: HTTP {status}: {exc.message}"
            if status == 429 or status >= 500:
                out.failure, out.retry = reason, idx
            else:  # the request itself was refused (e.g. 413): every record is rejected
                out.rejected += [self._rejected(n, status, reason, None, a, d)
                                 for n, a, d in zip(idx, actions, docs, strict=True)]
            return out
        except TransportError as exc:  # connection refused, timeout, TLS …
            out.failure, out.retry = f"Elasticsearch unreachable: {exc}", idx
            return out
        result = resp.body
        if not result.get("errors"):
            out.shipped = len(docs)
            return out
        replace: list[tuple[int, str]] = []
        for k, item in enumerate(result.get("items") or []):
            res = next(iter(item.values()))
            status = int(res.get("status", 0))
            if status in (200, 201):
                out.shipped += 1
            elif status == 409 and kinds[k] in _REPLACEABLE:
                replace.append((k, str(res.get("_index"))))
            elif status == 409:
                out.duplicates += 1
            elif status == 429 or status >= 500:
                out.retry.append(idx[k])
            else:
                err = res.get("error") or {}
                reason = (f"{err.get('type')}: {err.get('reason')}" if isinstance(err, dict)
                          else str(err))
                out.rejected.append(self._rejected(idx[k], status, reason, err, actions[k],
                                                   docs[k]))
        if replace:
            try:
                again = self._replace(replace, actions, docs)
            except (ApiError, TransportError) as exc:
                out.failure = f"replacing stored documents: {exc}"
                again = [k for k, _ in replace]
            out.replaced += len(replace) - len(again)
            out.retry += [idx[k] for k in again]
        return out

    @staticmethod
    def _rejected(line: int, status: int, reason: str, error: Any, action: bytes,
                  doc: bytes) -> Rejected:
        target = orjson.loads(action)["create"]
        return Rejected(line, status, reason, orjson.loads(doc), target["_index"],
                        target["_id"], error)

    def _replace(self, items: list[tuple[int, str]], actions: list[bytes],
                 docs: list[bytes]) -> list[int]:
        """Overwrite stored documents with their newer version; the items to retry."""
        lines: list[bytes] = []
        for k, index in items:
            rid = orjson.loads(actions[k])["create"]["_id"]
            got = self.client.perform_request(
                "GET", f"/{index}/_doc/{rid}", params={"_source": "false"}, headers=_HEADERS)
            head = orjson.dumps({"index": {"_index": index, "_id": rid,
                                           "if_seq_no": got.body["_seq_no"],
                                           "if_primary_term": got.body["_primary_term"]}})
            lines.append(head + b"\n" + docs[k] + b"\n")
        resp = self.client.perform_request("PUT", "/_bulk", params=_PARAMS, headers=_HEADERS,
                                           body=b"".join(lines))
        again = []
        for (k, _), item in zip(items, resp.body.get("items") or [], strict=True):
            if int(next(iter(item.values())).get("status", 0)) not in (200, 201):
                again.append(k)  # changed meanwhile (409) or busy: send the record again
        return again
