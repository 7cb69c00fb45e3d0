"""The service host: runs this node's service handlers and sends their replies.

Requests arrive on the I/O thread (:meth:`ServiceHost.on_requests`, one call per
read, one wake-up of a service's workers per run of requests to it), which only
queues them for the service's worker pool (or refuses them at once when the queue
is full or the service is going: the caller always gets an answer). The worker
decodes the request, runs the handler, encodes the result and writes the reply
itself on the link the request came in on (no hand-off back to the I/O thread).
A request this node made to itself has no link: its answer goes straight to the
caller part (``complete_local``).

Error replies (REPLY_ERROR) carry ``[kind, type, message, traceback]`` in msgpack:
``kind`` is ``no-service``, ``overloaded``, ``refused`` (a codec this node does not
accept), ``decode``, ``encode`` or ``error``.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

import msgpack

from easymesh.decoder import Decoder
from easymesh.errors import CodecError
from easymesh.protocol.codecs import (
    PICKLE_ID,
    PICKLE_SHM_ID,
    codec_for_id,
    codec_name,
)
from easymesh.protocol.frames import REPLY, REPLY_ERROR, Frame, encode_frame
from easymesh.registry import Registry
from easymesh.shmhub import ShmHub
from easymesh.workers import ServiceEntry

log = logging.getLogger("easymesh.node")

__all__ = ["ServiceHost", "safe_str"]

#: complete_local(rid, frame type, codec id, body): the answer to a request to ourselves.
CompleteLocal = Callable[[int, int, int, Any], None]


def safe_str(exc: BaseException) -> str:
    """``str(exc)``, or a stand-in when the exception's own ``__str__`` raises."""
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__}: str() failed>"


class ServiceHost:
    """Serves the services in the registry."""

    def __init__(
        self,
        node_name: str,
        registry: Registry,
        decoder: Decoder,
        complete_local: CompleteLocal,
        shm: ShmHub | None = None,
    ) -> None:
        self.shm = shm if shm is not None and shm.enabled else None
        self.node_name = node_name
        self.registry = registry
        self.decoder = decoder
        self._own_codec, self._own_decode = decoder.codec_id, decoder.codec.decode
        self.complete_local = complete_local

    # -- I/O thread ------------------------------------------------------------------------

    def on_request(self, link: Any, frame: Frame) -> None:
        """(the caller's thread) A request this node makes to itself (``link=None``)."""
        self.on_requests(link, [frame])

    def on_requests(self, link: Any, frames: list[Frame]) -> None:
        """(I/O thread) The requests of one read from ``link``, in order: each run of
        requests to one service is queued with one call (one wake-up of its workers)."""
        allowed = self.decoder.allowed
        last = None
        svc: ServiceEntry | None = None
        batch: list[tuple[tuple[Frame, Any], int]] = []
        for frame in frames:
            if not allowed[frame[1]]:
                self._refuse_codec(link, frame)
                continue
            if frame[2] != last:
                if batch:
                    self._queue(svc, batch, link)  # type: ignore[arg-type]
                    batch = []
                last = frame[2]
                svc = self.registry.service(last)
            if svc is None:
                name = frame[2].decode("utf-8", "replace")
                self.reply_error(
                    link,
                    frame[3],
                    "no-service",
                    "NoProviderError",
                    f"node {self.node_name!r} does not provide service {name!r}",
                )
                continue
            batch.append(((frame, link), len(frame[4])))
        if batch:
            self._queue(svc, batch, link)  # type: ignore[arg-type]

    def _queue(self, svc: ServiceEntry, batch: list[Any], link: Any) -> None:
        taken = svc.dispatcher.put_many(batch)
        for (frame, _), _n in batch[taken:]:  # a prefix is taken: answer the rest now
            self.refuse(svc, frame[3], link)

    def _refuse_codec(self, link: Any, frame: Frame) -> None:
        self.decoder.refuse(link, frame[1], "a request")
        self.reply_error(
            link,
            frame[3],
            "refused",
            "CodecRefused",
            f"node {self.node_name!r} does not accept codec {codec_name(frame[1])}"
            f" (it accepts {', '.join(self.decoder.accepted())})",
        )

    def refuse(self, svc: ServiceEntry, rid: int, link: Any) -> None:
        """A request the service's queue did not take (full, or the service is going)."""
        if svc.dispatcher.stopping:
            self.reply_error(
                link,
                rid,
                "no-service",
                "NoProviderError",
                f"service {svc.name!r} on node {self.node_name!r} was removed",
            )
        else:
            self.reply_error(
                link,
                rid,
                "overloaded",
                "ServiceOverloaded",
                f"service {svc.name!r} on node {self.node_name!r} has too many requests waiting",
            )

    # -- service workers -------------------------------------------------------------------

    def discard(self, svc: ServiceEntry, items: list[Any]) -> None:
        """(any thread) Requests queued for a service that stopped before running them."""
        for frame, link in items:
            self.reply_error(
                link,
                frame.request_id,
                "no-service",
                "NoProviderError",
                f"service {svc.name!r} on node {self.node_name!r} was removed before it ran",
            )

    def serve(self, svc: ServiceEntry, item: tuple[Frame, Any]) -> None:
        """(service worker) Decode, run the handler, encode and send the reply."""
        frame, link = item
        rid = frame.request_id
        try:
            if frame.codec == self._own_codec:  # decode(), inline: the common case
                try:
                    data = self._own_decode(frame.body)
                except Exception as exc:
                    raise self.decoder.failed(frame.codec, exc) from None
            else:
                data = self.decoder.decode(frame.codec, frame.body)
        except CodecError as exc:
            msg = f"the request could not be decoded: {safe_str(exc)}"
            self.reply_error(link, rid, "decode", type(exc).__name__, msg)
            return
        try:
            result = svc.handler(data)
        except BaseException as exc:  # SystemExit too: the caller gets an answer, the worker lives
            tb = traceback.format_exc()
            self.reply_error(link, rid, "error", type(exc).__name__, safe_str(exc), tb)
            return
        # The reply uses the request's codec: the caller surely decodes that one (pickle for
        # a pickle-shm request, with its large buffers in shared memory where the link allows).
        req_cid = PICKLE_ID if frame.codec == PICKLE_SHM_ID else frame.codec
        codec = self.decoder.codec if req_cid == self.decoder.codec_id else None
        enc = None
        body: Any = None
        try:
            codec = codec or codec_for_id(req_cid)
            shm = self.shm
            if shm is not None and shm.ready and req_cid == PICKLE_ID and link is not None:
                body = shm.inband(result, svc.name)
                if type(body) is tuple:  # a large buffer: shared memory if the link takes it
                    body, enc = shm.for_link(link, result, body[0], codec.encode)
            else:
                body = codec.encode(result)
        except Exception as exc:
            msg = f"the result of service {svc.name!r} could not be encoded: {safe_str(exc)}"
            self.reply_error(link, rid, "encode", type(exc).__name__, msg)
            return
        cid = req_cid  # the id of ``codec``
        if enc is not None:
            with enc:
                self.shm.send(link, b"", PICKLE_SHM_ID, enc, rid, REPLY)  # type: ignore
        elif link is None:
            self.complete_local(rid, REPLY, cid, body)
        else:
            link.send(encode_frame(REPLY, b"", body, cid, rid), 16 + len(body), False)

    def reply_error(
        self, link: Any, rid: int, kind: str, etype: str, message: str, tb: str = ""
    ) -> None:
        body = msgpack.packb([kind, etype, message[:10000], tb[-20000:]], use_bin_type=True)
        if link is None:
            self.complete_local(rid, REPLY_ERROR, 0, body)
        else:
            link.send(encode_frame(REPLY_ERROR, b"", body, 0, rid), 16 + len(body), False)
