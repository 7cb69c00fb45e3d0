"""meshbag: record easymesh topics into MCAP files, play them back, inspect and export them.

Built on the public Node API only (``listen(raw=True)``, ``send_raw``,
``has_listeners``, ``wait_for_listener``, ``stats``). Modules:
``bagfile`` (file conventions and the writer), ``recorder``, ``player``,
``summary`` (``info``), ``export`` (JSON for Foxglove), ``console`` (signals,
status line).

Design decisions, and why:

* **MCAP, one channel per topic (and codec), schema-less.** The bytes are
  whatever the sender's codec produced; there is no schema to give, so the
  schema id is 0 and the channel's ``message_encoding`` names the codec
  (``pickle``, ``msgpack``, ``json``, ``raw``; ``codec-<id>`` otherwise). The
  codec id is also stored in the channel metadata (``easymesh.codec_id``) so
  user codecs (ids 128-254) replay exactly. ``json`` is MCAP's well-known
  encoding, so JSON topics are plottable in Foxglove as recorded.
* **Exact playback.** Messages keep their encoded bytes; play sends them with
  the recorded codec id and never decodes them (so playing a pickle bag runs
  no pickle in the player).
* **Timestamps** are the recorder's wall clock (``time.time_ns()``) when it
  handled the message; the core does not carry send times. ``log_time`` =
  ``publish_time``; ``sequence`` counts per channel.
* **zstd compression by default** (``--compression lz4|none``): it is MCAP's
  default, every MCAP reader supports it, and at 1 MiB chunks it costs the
  recorder nothing measurable (writer alone, 1 kB incompressible messages on
  the loaded 2-core VM: zstd ~110k msg/s, lz4 ~112k, none ~96k; Python per
  message dominates) while shrinking typical dict payloads several times.
* **A file with the final name is always complete.** The recorder writes
  ``FILE.part`` and renames it after writing the summary, on Ctrl-C, SIGTERM,
  SIGHUP, ``--duration`` or a write error; only SIGKILL or a power cut can
  leave a ``.part`` (without summary) behind, and ``record_*.bag`` lookups never
  pick it up. The file is created on the first message, so an empty recording
  leaves nothing. An existing FILE is never overwritten without ``--force``;
  the default name gets ``_2``, ``_3``... if taken within the same second.
* **The recorder keeps up**: callbacks append straight to a locked writer from
  each topic's listener thread (no extra queue or thread), and listeners get
  deep queues (1,000,000 messages / 256 MiB per topic) so bursts are absorbed;
  any drop is counted, printed, and stored in the bag's ``meshbag`` metadata.
  Its default node name is ``meshbag-record-<pid>``: unique, because nodes
  that share a name split a topic's messages between them.
* **info reads only the summary** (statistics, channels, chunk indexes) plus
  the ``meshbag`` metadata record, which carries bytes per topic (MCAP
  statistics count messages, not bytes). Rate = messages / bag duration.
* **play waits for listeners, bounded** (``--wait``, default 5 s), names the
  topics still without one and plays anyway: a message nobody listens to goes
  nowhere, as the original send did; it is counted. Topics whose encoding is
  not an easymesh codec (a foreign MCAP file) are skipped and counted.
* **export --json** decodes and re-encodes as JSON objects with inferred JSON
  schemas, by the mapping the live Foxglove bridge uses (non-dict values wrapped
  as ``{"data": ...}``, NaN as null, what JSON cannot hold as its repr, uint8
  arrays as ``foxglove.RawImage``); undecodable messages are skipped and counted
  per topic. See ``export``.
"""

from __future__ import annotations

from easymesh.bag.bagfile import BagError, BagWriter, default_bag_path, latest_bag
from easymesh.bag.export import ExportResult, export_json
from easymesh.bag.player import Player, PlayResult, play
from easymesh.bag.recorder import Recorder, RecordResult, record
from easymesh.bag.summary import BagInfo, TopicInfo, format_info, read_info

__all__ = [
    "BagError",
    "BagInfo",
    "BagWriter",
    "ExportResult",
    "PlayResult",
    "Player",
    "RecordResult",
    "Recorder",
    "TopicInfo",
    "default_bag_path",
    "export_json",
    "format_info",
    "latest_bag",
    "play",
    "read_info",
    "record",
]
