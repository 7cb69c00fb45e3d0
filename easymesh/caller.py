"""The caller: this node's side of requests (``request``, ``request_future``, ``ping``).

Path of a request, counted in thread hand-offs (each costs tens of µs here):

* the caller's thread encodes the request and writes it to the provider's link
  itself, after recording it in the :class:`~easymesh.requests.RequestTable`;
* the I/O thread reads the answer and pops the entry — only for the link the
  request went out on (a peer cannot answer what it was not asked) — and hands the
  *undecoded* answer on:

  - to a blocking ``request()``: by setting the entry's ``answer`` and releasing the
    plain lock the caller sleeps on; the caller's own thread decodes the answer (one
    hand-off, no user code — a custom codec's ``decode`` is user code — on the I/O
    thread);
  - to a ``request_future()``: through the node's futures thread
    (``easymesh-<node>-futures``, :mod:`easymesh.completer`), which decodes and
    completes the Future, so that done-callbacks run there and never on the I/O
    thread. The answers of one read go over as one batch. ``result()`` called on that
    very thread for a future it has not completed yet raises WouldDeadlock at once.

Timeouts: ``timeout=None`` means the node's ``request_timeout``; ``math.inf`` waits
forever (a lost link or close still fails the call); ``0`` or a negative timeout
leaves no time for an answer: the request is not sent and RequestTimeout is raised
(``request``) or set on the returned future (``request_future``) at once.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED
from typing import Any

import msgpack

from easymesh.completer import Completer
from easymesh.counters import Counter
from easymesh.decoder import Decoder
from easymesh.errors import (
    CodecError,
    ConnectionLost,
    NodeClosed,
    NoProviderError,
    RequestTimeout,
    ServiceError,
    WouldDeadlock,
)
from easymesh.escape import printable
from easymesh.loadbalancing import single_is_chosen
from easymesh.protocol.codecs import PICKLE_SHM_ID
from easymesh.protocol.frames import PONG, REPLY, REQUEST, Frame, encode_frame
from easymesh.protocol.messages import NodeInfo
from easymesh.registry import Registry
from easymesh.requests import Pending, RequestTable
from easymesh.servicehost import ServiceHost
from easymesh.shmhub import ShmHub
from easymesh.transport.keepalive import ping_frame
from easymesh.view import TopologyView

log = logging.getLogger("easymesh.node")

__all__ = ["Caller", "RequestFuture"]

#: Seconds between sweeps of request deadlines: a future's timeout fires up to this late.
SWEEP = 0.05
#: Longest a request to a service this node never asked about waits for the coordinator
#: to name its providers (issue 15) before NoProviderError; one round trip normally.
PROVIDER_ANSWER_WAIT = 5.0
_new_frame = tuple.__new__
_FAILED = -1  # "frame type" of a completion that is an exception
_INF = math.inf
_DONE = (FINISHED, CANCELLED_AND_NOTIFIED, CANCELLED)  # Future.done()'s states
TIMEOUT_MAX = threading.TIMEOUT_MAX
#: Largest REPLY_ERROR body decoded (a service host's is under 130 kB).
MAX_ERROR_REPLY = 256 * 1024
#: Longest remote error text kept in an exception message.
MAX_ERROR_TEXT = 10_000


#: What a blocking call sleeps on: a plain lock, taken when the request starts and
#: released by whoever completes it, after it set the entry's ``answer`` or ``error``
#: (lighter than a Future: no Condition, no callbacks, no Python-level method calls).
_new_waiter = threading.Lock
Waiter = type(threading.Lock())


class RequestFuture(Future):
    """A ``concurrent.futures.Future`` that refuses to wait on the thread that would
    complete it (a done-callback calling ``result()`` on another pending request)."""

    _completer: Callable[[], bool] = staticmethod(lambda: False)

    # A finite timeout past threading.TIMEOUT_MAX (~292 years) waits that long instead
    # of raising OverflowError from the lock.
    def result(self, timeout: float | None = None) -> Any:
        self._check_wait()
        return super().result(None if timeout is None else min(timeout, threading.TIMEOUT_MAX))

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._check_wait()
        return super().exception(None if timeout is None else min(timeout, threading.TIMEOUT_MAX))

    def _check_wait(self) -> None:
        # The state first, with no lock: exact on the futures thread (the only one that
        # raises); a done future (result() in a done-callback) costs no lock and no call.
        if self._state not in _DONE and self._completer():
            raise WouldDeadlock(
                "result() of a pending request, called on the node's futures thread (from a"
                " done-callback), would never return: that thread completes it"
            )


class Caller:
    """Requests and pings from this node (thread-safe)."""

    def __init__(
        self,
        *,
        node_name: str,
        node_id: str,
        view: TopologyView,
        registry: Registry,
        host: ServiceHost,
        decoder: Decoder,
        balancer: Any,
        link_to: Callable[[NodeInfo], Any],
        links: dict[str, Any],
        call_later: Callable[..., Any],
        in_io_thread: Callable[[], bool],
        request_timeout: float,
        max_in_flight: int,
        shm: ShmHub | None = None,
    ) -> None:
        self.node_name = node_name
        self.node_id = node_id
        self.view = view
        self.registry = registry
        self.host = host
        self.decoder = decoder
        self._own_codec, self._own_decode = decoder.codec_id, decoder.codec.decode
        self.balancer = balancer
        self._single_is_chosen = single_is_chosen(balancer)
        self.link_to = link_to
        self.links = links  # the router's table of dialled links, read lock-free
        self.call_later = call_later
        self.in_io_thread = in_io_thread
        self.request_timeout = request_timeout
        self.shm = shm if shm is not None and shm.enabled else None
        self.table = RequestTable(
            max_in_flight=max_in_flight, on_deadlines=lambda: call_later(SWEEP, self._sweep)
        )
        self.requests = Counter()
        self.unmatched = Counter()
        self._closed: BaseException | None = None
        self._completer = Completer(
            f"easymesh-{node_name}-futures", self._finish, self._finish_abandoned
        )

    # -- public calls (the caller's thread) ------------------------------------------------

    def request(self, service: str, data: Any, timeout: float | None = None) -> Any:
        t = self.request_timeout if timeout is None else timeout
        if self._closed is not None:  # a closed node says so, whatever the timeout
            raise NodeClosed(str(self._closed))
        if not t > 0:  # NaN too: no lock wait or deadline heap takes it
            raise RequestTimeout(f"service {service!r}: a timeout of {t:g} s leaves no time")
        if self.in_io_thread():
            raise WouldDeadlock("request() on the node's I/O thread would never get its answer")
        waiter = _new_waiter()
        waiter.acquire()
        p = self._start(service, data, waiter, None)
        ftype, codec_id, body = self._await(p, t)
        if ftype == REPLY and codec_id == self._own_codec:  # _outcome()'s first case, inline
            try:
                return self._own_decode(body)
            except Exception as exc:
                raise _undecodable(self.decoder.failed(codec_id, exc), service) from None
        return self._outcome(service, ftype, codec_id, body)

    def request_future(self, service: str, data: Any, timeout: float | None = None) -> Future:
        t = self.request_timeout if timeout is None else timeout
        future = RequestFuture()
        future._completer = self._completer.owns_current_thread  # type: ignore[method-assign]
        if not t > 0:  # NaN too (see request())
            self._check_open()
            future.set_exception(
                RequestTimeout(f"service {service!r}: a timeout of {t:g} s leaves no time")
            )
            return future
        self._start(service, data, future, t)
        return future

    def ping(self, name_or_id: str, timeout: float) -> float:
        self._check_open()
        target = self.view.find(name_or_id)
        if target is None:
            raise NoProviderError(f"no node named or with id {name_or_id!r}")
        if target.id == self.node_id:
            return 0.0
        if not timeout > 0:  # NaN too (see request())
            raise RequestTimeout(f"a ping timeout of {timeout:g} s leaves no time")
        if self.in_io_thread():
            raise WouldDeadlock("ping() on the node's I/O thread would never get its answer")
        link = self.link_to(target)
        if link is None:
            self._check_open()
            raise ConnectionLost(f"cannot reach node {target.name!r} ({target.id})")
        waiter = _new_waiter()
        waiter.acquire()
        p = self._add(Pending(waiter, link, "<ping>", target.id, None))
        start = time.perf_counter()
        if not link.send(ping_frame(p.rid), 16, False):
            self.table.discard(p.rid)
            self._check_open()
            raise ConnectionLost(f"connection to node {target.name!r} is closed")
        try:
            self._await(p, timeout)
        except RequestTimeout:
            raise RequestTimeout(
                f"node {target.name!r} did not answer a ping within {timeout:g} s"
            ) from None
        return time.perf_counter() - start

    def _await(self, p: Pending, timeout: float) -> tuple[int, int, Any]:
        """Sleep on the lock of ``p`` for up to ``timeout`` s (inf: forever); its answer, or
        raise its error, or RequestTimeout once the entry is taken back."""
        waiter = p.future
        wait = -1 if timeout == _INF else timeout if timeout < TIMEOUT_MAX else TIMEOUT_MAX
        try:
            got = waiter.acquire(True, wait)
        except BaseException:  # e.g. KeyboardInterrupt: nobody waits for this answer now
            self.table.discard(p.rid)
            raise
        if not got:
            if self.table.discard(p.rid) is not None:
                raise RequestTimeout(f"service {p.service!r} did not answer within {timeout:g} s")
            waiter.acquire()  # completed at this very moment: its answer is being set
        if p.error is not None:
            raise p.error
        return p.answer  # type: ignore[return-value]

    def _check_open(self) -> None:
        if self._closed is not None:
            raise NodeClosed(str(self._closed))

    def _add(self, p: Pending) -> Pending:
        """Record a request; NodeClosed if close() began meanwhile. close() marks the
        caller closed *before* it fails what the table holds, so an entry added after
        that sweep is seen here and taken back: it would otherwise go out and be
        completed by whoever comes last (the I/O thread, as it stops)."""
        rid = self.table.insert(p)
        if self._closed is not None:
            self.table.discard(rid)
            raise NodeClosed(str(self._closed))
        return p

    def _start(self, service: str, data: Any, future: Any, timeout: float | None) -> Pending:
        if self._closed is not None:
            raise NodeClosed(str(self._closed))
        providers = self.view.providers(service)
        if not providers:
            # Not asked about yet? Ask the coordinator and wait (one round trip, bounded).
            wait = self.request_timeout if timeout is None else timeout
            self.view.wait_known_service(service, min(wait, PROVIDER_ANSWER_WAIT))
            providers = self.view.providers(service)
            if not providers:
                raise NoProviderError(f"no node provides service {service!r}")
        if len(providers) == 1 and self._single_is_chosen:
            node = providers[0]
        else:
            node = self.balancer.choose_node(service, providers)
        local = node.id == self.node_id
        link = None if local else (self.links.get(node.id) or self.link_to(node))
        shm, enc = self.shm, None
        try:
            if shm is None or link is None or not shm.ready:
                body = self.decoder.encode(data)
            else:
                body = shm.inband(data, service)
                if type(body) is tuple:  # a large buffer: shared memory if the link takes it
                    body, enc = shm.for_link(link, data, body[0], self.decoder.encode)
        except Exception as exc:
            raise CodecError(f"cannot encode the request to {service!r}: {exc}") from exc
        name = service.encode("utf-8")
        self.requests.incr()
        if local:
            p = self._start_local(service, name, body, future, timeout)
        else:
            if link is None:
                self._check_open()
                raise ConnectionLost(
                    f"cannot reach node {node.name!r} ({node.id}) providing {service!r}"
                )
            try:
                p = self._add(Pending(future, link, service, node.id, timeout))
            except BaseException:  # TooManyRequests, NodeClosed
                if enc is not None:
                    enc.close()  # its blocks in the pool: nothing else gives them back
                raise
            rid = p.rid
            if enc is not None:
                with enc:
                    ok = shm.send(link, name, PICKLE_SHM_ID, enc, rid, REQUEST)  # type: ignore
            else:
                bufs = encode_frame(REQUEST, name, body, self.decoder.codec_id, rid)
                ok = link.send(bufs, 16 + len(name) + len(body), False)
            if not ok:
                self.table.discard(rid)
                self._check_open()
                why = link.close_reason  # e.g. the peer stopped reading past the bound
                raise ConnectionLost(
                    str(why) if why else f"connection to node {node.name!r} is closed"
                )
        return p  # (a timeout's deadline went into the table, which schedules the sweep)

    def _start_local(
        self, service: str, name: bytes, body: Any, future: Any, timeout: float | None
    ) -> Pending:
        svc = self.registry.service(name)
        if svc is None:
            raise NoProviderError(f"no node provides service {service!r}")
        if (
            not svc.dispatcher.threaded
            and isinstance(future, Waiter)
            and self.registry.is_spinner()
        ):
            raise WouldDeadlock(
                f"service {service!r} runs in spin_once() on this very thread: a blocking"
                " request() from here would never be served (use request_future())"
            )
        d = svc.dispatcher
        if d.workers == 1 and isinstance(future, Waiter) and d.owns_current_thread():
            raise WouldDeadlock(
                f"a blocking request() from the only worker of service {service!r} to"
                " itself would never be served (give it more workers)"
            )
        p = self._add(Pending(future, None, service, self.node_id, timeout))
        self.host.on_request(
            None, _new_frame(Frame, (REQUEST, self.decoder.codec_id, name, p.rid, body))
        )
        return p

    # -- answers ----------------------------------------------------------------------------

    def on_answers(self, link: Any, frames: list[Frame]) -> None:
        """(I/O thread) REPLY, REPLY_ERROR and PONG frames of one read from ``link``:
        blocking callers are woken one by one, futures go to the futures thread in one
        batch."""
        pop = self.table.pop
        allowed = self.decoder.allowed
        later: list[tuple[Pending, int, int, Any]] = []
        for frame in frames:
            p = pop(frame[3], link)
            if p is None:
                self.unmatched.incr()  # timed out, or never asked on this link
                continue
            if frame[0] == REPLY and not allowed[frame[1]]:
                self.decoder.refuse(link, frame[1], "a reply")
                self._fail(p, CodecError(f"the reply to {p.service!r} came in a refused codec"))
            elif type(p.future) is Waiter:  # _deliver(), inline: the common case
                p.answer = (frame[0], frame[1], frame[4])
                p.future.release()
            else:
                later.append((p, frame[0], frame[1], frame[4]))
        if later:
            self._complete_later(later)

    def complete_local(self, rid: int, ftype: int, codec_id: int, body: Any) -> None:
        """(service worker) The answer to a request this node made to itself."""
        p = self.table.pop(rid, None)
        if p is not None:
            self._deliver(p, ftype, codec_id, body)

    def fail_link(self, link: Any, exc: BaseException) -> None:
        """(I/O thread) ``link`` closed: fail what went out on it."""
        for p in self.table.take_where(lambda p: p.link is link):
            self._fail(p, exc)

    def _deliver(self, p: Pending, ftype: int, codec_id: int, body: Any) -> None:
        if type(p.future) is Waiter:
            p.answer = (ftype, codec_id, body)
            p.future.release()
        else:
            self._complete_later([(p, ftype, codec_id, body)])

    def _fail(self, p: Pending, exc: BaseException) -> None:
        if type(p.future) is Waiter:
            p.error = exc
            p.future.release()
        else:
            self._complete_later([(p, _FAILED, 0, exc)])

    def _outcome(self, service: str, ftype: int, codec_id: int, body: Any) -> Any:
        """(the waiting thread) The result of an answer, or raise its error."""
        if ftype == PONG:
            return None
        if ftype == REPLY:
            if codec_id == self._own_codec:  # the node's own codec: no second call
                try:
                    return self._own_decode(body)
                except Exception as exc:  # counted and wrapped as Decoder.decode does
                    raise _undecodable(self.decoder.failed(codec_id, exc), service) from None
            try:
                return self.decoder.decode(codec_id, body)
            except CodecError as exc:
                raise _undecodable(exc, service) from None
        # An error reply is the provider's text: escaped into our exception's message (it
        # may end up in a log line), bounded before decoding (a service host sends at most
        # 10,000 + 20,000 characters). The traceback stays as sent: many lines by nature.
        try:
            if len(body) > MAX_ERROR_REPLY:
                raise ValueError("too large")
            kind, etype, message, tb = msgpack.unpackb(body, raw=False)
        except Exception:
            kind, etype, message, tb = "error", "ProtocolError", "malformed error reply", ""
        if kind == "no-service":
            raise NoProviderError(printable(message, MAX_ERROR_TEXT))
        raise ServiceError(printable(etype), printable(message, MAX_ERROR_TEXT), str(tb), service)

    # -- the futures thread -----------------------------------------------------------------

    def _complete_later(self, batch: list[tuple[Pending, int, int, Any]]) -> None:
        if not self._completer.put(batch):
            for item in batch:  # stopping: finish here
                self._finish(item)

    def _finish(self, item: tuple[Pending, int, int, Any]) -> None:
        p, ftype, codec_id, body = item
        future = p.future
        try:
            if ftype == _FAILED:
                future.set_exception(body)
            else:
                try:
                    result = self._outcome(p.service, ftype, codec_id, body)
                except BaseException as exc:  # a custom codec's SystemExit too: never pending
                    future.set_exception(exc)
                else:
                    future.set_result(result)
        except Exception:  # cancelled by its owner meanwhile
            pass

    def _finish_abandoned(self, items: list[tuple[Pending, int, int, Any]]) -> None:
        """(the closing thread) close() gave up on the futures thread (a done-callback
        blocks it): complete what it left on a thread of their own, so that every
        future still fails, and close() stays bounded and runs no user code."""

        def finish_all() -> None:
            for item in items:
                self._finish(item)

        threading.Thread(
            target=finish_all, name=f"easymesh-{self.node_name}-futures-late", daemon=True
        ).start()

    # -- deadlines --------------------------------------------------------------------------

    def _sweep(self) -> None:
        """(I/O thread) Fail the futures whose deadline passed; again while any wait."""
        expired, again = self.table.sweep(stop=self._closed is not None)
        for p in expired:
            self._fail(
                p, RequestTimeout(f"service {p.service!r} did not answer within {p.timeout:g} s")
            )
        if again:
            self.call_later(SWEEP, self._sweep)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self, reason: BaseException, deadline: float) -> None:
        """Fail every request in flight with ``reason``; let the futures thread deliver
        those failures (until ``deadline``) and end."""
        self._closed = reason
        for p in self.table.take_where(lambda p: True):
            self._fail(p, reason)
        self._completer.begin_stop()
        self._completer.join(deadline)

    def owns_current_thread(self) -> bool:
        return self._completer.owns_current_thread()


def _undecodable(exc: CodecError, service: str) -> ServiceError:
    """What a caller raises for a reply it could not decode."""
    return ServiceError(
        type(exc.__cause__ or exc).__name__,
        f"the reply could not be decoded: {printable(exc, MAX_ERROR_TEXT)}",
        "",
        service,
    )
