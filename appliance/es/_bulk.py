"""One bulk round trip, and where it runs (a thread, or a process of its own).

:class:`Bulker` turns spooled EVE lines into ECS documents and sends them in one bulk request,
returning an :class:`Outcome` per line (stored, duplicate, replaced, to retry, rejected). It keeps
no state between calls; the retry loop, the spool and the dead-letter file belong to the
shipper. A whole request that fails with a connection error, a timeout, 429 or 5xx comes back
as ``failure`` with every line to retry.

The CPU-heavy part of shipping (parsing, ECS conversion, serialising, reading the response) would
compete with the pipeline for the interpreter lock if it ran in a thread of the pipeline's
process. :class:`ProcessRunner` runs a :class:`Bulker` in a child process (``spawn``) and talks
to it over a pipe: the shipper's thread only passes bytes and small outcomes, so the packet
path keeps its core. The child runs at a lower CPU priority (nice +10): when the pipeline and
shipping want the same core, the pipeline gets it, and the spool holds what is not shipped yet.
The lines travel as the spool holds them (one buffer, newline-separated), so the shipper's
thread neither splits nor joins them. :class:`ThreadRunner` runs it in the calling thread
(tests, small setups). If the child dies, the runner reports a failure (the lines are retried)
and starts a new one.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from hashlib import blake2b
from multiprocessing.connection import Connection
from typing import Any, Protocol

import orjson
from elastic_transport import TransportError
from elasticsearch import ApiError, Elasticsearch

from ._client import COMPAT_ACCEPT, COMPAT_NDJSON, connect
from .ecs import dataset, doc_id, to_ecs
from .templates import data_stream, setup

__all__ = ["Bulker", "Outcome", "ProcessRunner", "Rejected", "Runner", "ThreadRunner"]

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


_WORKER_NICE = 10  # the bulk worker's CPU priority below the pipeline's


class Runner(Protocol):
    def setup(self) -> str | None: ...

    def send(self, data: bytes | memoryview, count: int) -> Outcome:
        """Ship ``count`` lines given as one newline-separated buffer."""
        ...

    def close(self) -> None: ...

    def interrupt(self) -> None: ...


class ThreadRunner:
    """A :class:`Bulker` called in the shipper's own thread."""

    def __init__(self, client: Elasticsearch, namespace: str, host: str | None) -> None:
        self._bulker = Bulker(client, namespace, host)

    def setup(self) -> str | None:
        return self._bulker.setup()

    def send(self, data: bytes | memoryview, count: int) -> Outcome:
        return self._bulker.send(bytes(data).split(b"\n"))

    def interrupt(self) -> None:
        """Nothing to do: a request in flight ends within the client's request timeout."""

    def close(self) -> None:
        self._bulker.client.close()


def _serve(conn: Connection, connection: Mapping[str, Any], namespace: str,
           host: str | None) -> None:
    """The child process: answer setup (``S``) and bulk (``B``, then the lines) messages."""
    try:
        os.nice(_WORKER_NICE)
    except OSError:  # not allowed here: ship at the same priority
        pass
    client = connect(**connection)
    bulker = Bulker(client, namespace, host)
    try:
        while True:
            try:
                msg = conn.recv_bytes()
            except EOFError:
                return
            if msg == b"S":
                conn.send(bulker.setup())
            elif msg == b"B":
                conn.send(bulker.send(conn.recv_bytes().split(b"\n")))
            else:
                return
    finally:
        client.close()
        conn.close()


class ProcessRunner:
    """A :class:`Bulker` in a child process; ``connection`` are :func:`connect`'s arguments."""

    def __init__(self, connection: Mapping[str, Any], namespace: str, host: str | None) -> None:
        self._args = (dict(connection), namespace, host)
        self._ctx = multiprocessing.get_context("spawn")
        self._closing = False
        self._proc: Any = None
        self._start()

    def _start(self) -> None:
        self._conn, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_serve, args=(child, *self._args),
                                       name="lateral-es-bulk", daemon=True)
        self._proc.start()
        child.close()

    def _call(self, *msgs: bytes | memoryview) -> Any:
        if self._proc is None:
            raise EOFError("the bulk worker process was stopped")
        try:
            for msg in msgs:
                self._conn.send_bytes(msg)
            return self._conn.recv()
        except (EOFError, OSError):  # the child died (or was interrupted): start a new one
            self._stop_child()
            if not self._closing:
                self._start()
            raise

    def setup(self) -> str | None:
        try:
            result: str | None = self._call(b"S")
        except (EOFError, OSError) as exc:
            return f"bulk worker process failed: {exc!r}"
        return result

    def send(self, data: bytes | memoryview, count: int) -> Outcome:
        try:
            result: Outcome = self._call(b"B", data)
        except (EOFError, OSError) as exc:
            return Outcome(failure=f"bulk worker process failed: {exc!r}",
                           retry=list(range(count)))
        return result

    def interrupt(self) -> None:
        """Stop a request in flight (at close, after the timeout): the child is ended."""
        self._closing = True
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.terminate()

    def _stop_child(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        self._conn.close()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
        proc.close()

    def close(self) -> None:
        self._closing = True
        self._stop_child()
