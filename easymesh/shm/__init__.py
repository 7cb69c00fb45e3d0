"""Zero-copy shared memory between processes on one host (issue 13, phase 1: the parts).

Large buffers of a message (numpy arrays, bytes, bytearray, memoryview, PickleBuffer of at
least 64 KiB) are written once into a block of the sender's *pool*, an anonymous memfd; only a
small descriptor crosses the Unix socket. Each receiver maps the sender's memfd read-only once
per link and gets numpy arrays / memoryviews that lie in that mapping. When a receiver's last
reference to a block goes, a RELEASE goes back; the sender reuses a block only when every
receiver and the sender itself gave it back. Nothing is named in /dev/shm, so nothing outlives
the processes, however they die.

Modules, by responsibility (dependencies point down)::

    link.py        blocking prototype: Publisher / Subscriber over Unix sockets (tests, bench)
    release.py     Remote (receiver: mapped arenas, tracked views, RELEASE queue)
                   Ledger (sender: which blocks each peer holds; release all on link close)
    encoding.py    pickle 5 + buffer_callback/persistent_id -> Encoded (head, stream, inline)
                   and decode (views -> object)
    fdpass.py      SCM_RIGHTS send/receive, FdQueue (fds in stream order)
    pool.py        Pool: one bounded arena, blocks with reference counts, loans
    arena.py       Arena (memfd, sealed, mapped RW) / Mapping (peer's memfd, mapped RO), views
    blocks.py      BlockAllocator: page-aligned first-fit ranges (sans-IO)
    descriptor.py  MESSAGE / ARENA / RELEASE byte layouts, validated decoding (sans-IO)
    large.py       finding the buffers of a message worth sharing, while it pickles (sans-IO)

Phase 2: wiring into the node (the plan these parts were built for)
===================================================================

As built, two things differ from this plan: shared memory is negotiated per link, when its
first large message wants it (``SHM_ASK`` / ``SHM_OFFER`` / ``SHM_ARENA``, not a HELLO flag),
and a link reads with ``recvmsg_into`` only while the arena's fd is on its way: measured, that
read costs about 4,500 instructions more than ``recv_into``, not a few hundred ns. See
:mod:`easymesh.shmhub` (Negotiation).

Frames. Three new frame types in ``protocol/frames.py`` for Unix links that negotiated shm in
HELLO (a flag; a peer that did not is sent the socket path): ``SHM_ARENA`` (body
``descriptor.encode_arena``, fd attached), ``SHM_RELEASE`` (body ``encode_release``), and a new
codec id ``pickle-shm`` whose TOPIC / REQUEST / REPLY bodies are MESSAGE bodies. TCP links, a
peer on another host, another OS or ``shm=False`` use ``encode(obj, pool=None)`` or the plain
pickle codec: same decoder, everything inline.

Sending. ``Node.send`` encodes once per message (``encode``), then per same-host link:
``ledger.sent(enc.blocks)`` and ``Connection.send([frame header, *enc.buffers])``; then
``enc.close()``. The first message that uses the pool on a link is preceded by ``SHM_ARENA``,
whose queue item carries a ``dup`` of the arena's fd (closed once sent or dropped, so a pool
closed meanwhile cannot turn it into EBADF or, worse, someone else's fd). The rule for the Connection's write path is simple
because fds may arrive *early* but never late (the receiver queues them): a ``sendmsg`` that
includes any byte of an item with unsent fds attaches them (``fdpass.send_with_fds``); once the
call took at least one byte they count as sent; ``BlockingIOError`` keeps them for the retry.
At most ``fdpass.MAX_FDS_PER_READ`` fds per call (the pool has one arena, so one). Reference
counting against drops: call ``ledger.sent`` only for a frame ``Connection.send`` accepted,
and give the references back for a frame later dropped from the queue (the queue item needs
the blocks and the ledger). ``Node.loan`` should fall back to an ordinary array when
``Pool.loan`` returns None (pool full), so a camera loop never has to test for it.

Receiving, fds in stream order. Today ``Connection._read`` does ``recv_into(decoder.get_buffer())``.
On a Unix link that negotiated shm it must use ``fdpass.recv_into_with_fds(sock,
decoder.get_buffer())`` instead (``recvmsg_into`` with room for a few fds and
``MSG_CMSG_CLOEXEC``) and push the fds it gets onto the link's ``FdQueue`` *before* decoding
the frames of that read. The kernel gives fds to the read that returns the first byte of the
``sendmsg`` they came with and never continues a read past them, so when the decoder yields
an ``SHM_ARENA`` frame its fd is already queued: the handler pops the oldest
(``FdQueue.pop``) and calls ``Remote.add_arena``. Stream order = FIFO order; no numbering.
Fds without an ARENA frame, more than the bound, or ``MSG_CTRUNC`` close the link (and
``FdQueue.close`` closes them). A TCP link never calls ``recvmsg``. The ``recvmsg_into`` cost
over ``recv_into`` is a few hundred ns per read.

Decoding. ``decode_message(body, remote.arena_size)`` runs on the I/O thread (cheap, validates);
``encoding.decode(message, remote.view)`` runs where codecs decode today (a worker thread,
since pickle runs code). Each shm view registers a finalizer that queues its RELEASE and calls
the loop's wake-up; the I/O thread drains ``Remote.drain()`` into ``SHM_RELEASE`` frames (they
are never dropped; a RELEASE of 4,096 references is 48 KiB, and one is sent per wake-up at
most). A receiving ``SHM_RELEASE`` goes to ``ledger.released`` (ProtocolError closes the link).
Link close: ``ledger.close()`` (sender side) and ``remote.close()`` + ``fds.close()``.

Latched topics keep the *object*, so a latched frame holds its block until replaced (state it
in the docs); ``meshbag record`` must copy (``bytes(view)`` / ``np.array(a)``) what it keeps;
the dispatch drop-oldest policy drops objects, which releases their blocks.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_POOL_SIZE", "DEFAULT_THRESHOLD", "Encoded", "Pool", "decode", "encode"]

_LAZY = {
    "DEFAULT_POOL_SIZE": "easymesh.shm.pool",
    "Pool": "easymesh.shm.pool",
    "DEFAULT_THRESHOLD": "easymesh.shm.encoding",
    "Encoded": "easymesh.shm.encoding",
    "decode": "easymesh.shm.encoding",
    "encode": "easymesh.shm.encoding",
}


def __getattr__(name: str) -> Any:
    # Lazy, so that the transport can import fdpass (portable) on systems without memfd or
    # seals, where the arena modules do not import.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'easymesh.shm' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
