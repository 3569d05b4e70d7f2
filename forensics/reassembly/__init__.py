"""TCP stream reassembly, conversations and session export.

The second pass over a capture: the packet index says where every payload
sits in the evidence file; this package puts each TCP direction back together
(out-of-order segments, retransmissions, overlaps where the first copy wins and
conflicts are recorded, gaps kept as byte ranges, sessions picked up
mid-stream, sequence wrap-around) without loading the capture, and serves

* :func:`conversation`: one session as ordered turns whose bytes can be read
  (``Case.session(uid)``),
* :func:`export_pcap`: chosen sessions written back out as a capture file
  (``Case.export_pcap(uids, path)``),
* :func:`build_sessions`: the batch form the ingest uses before the protocol
  parsers (:mod:`forensics.apps`).
"""

from __future__ import annotations

from forensics.reassembly.conversation import Conversation, Turn, conversation
from forensics.reassembly.export import export_pcap
from forensics.reassembly.stream import Conflict, Datagram, Direction, SessionData, build_sessions

__all__ = [
    "Conflict",
    "Conversation",
    "Datagram",
    "Direction",
    "SessionData",
    "Turn",
    "build_sessions",
    "conversation",
    "export_pcap",
]
