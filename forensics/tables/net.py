"""Network tables: the packet index (Parquet) and the sessions table.

Column names follow Zeek's conn.log (without the ``id.`` prefix) so that analysts
read them as they already know them and comparisons with Zeek are direct.
"""

from __future__ import annotations

from forensics._schema import Column as C
from forensics._schema import Table, declare

PACKETS = declare(Table(
    "packets",
    "One row per decoded layer of a captured frame (two for a decapsulated tunnel).",
    (
        C("evidence_id", "VARCHAR", "capture file", dictionary=True),
        C("frame", "BIGINT", "1-based frame number in the capture (as Wireshark counts)"),
        C("ts_ns", "BIGINT", "capture timestamp, nanoseconds since the epoch (UTC); NULL if none"),
        C("file_offset", "BIGINT", "byte offset of the frame data in the evidence file"),
        C("caplen", "INTEGER", "captured length"),
        C("wirelen", "INTEGER", "original length on the wire"),
        C("interface", "INTEGER", "pcapng interface id (0 for pcap)"),
        C("linktype", "INTEGER", "link-layer type of the interface"),
        C("tunnel_depth", "UTINYINT", "0 for the outer packet, 1 for the packet inside a tunnel"),
        C("tunnel", "VARCHAR", "encapsulation the row was found in (vxlan, gre, ...)", dictionary=True),
        C("vlan", "SMALLINT", "outer 802.1Q VLAN id"),
        C("inner_vlan", "SMALLINT", "inner (QinQ) VLAN id"),
        C("ethertype", "INTEGER", "last ethertype seen"),
        C("ip_version", "UTINYINT", "4 or 6; NULL if not IP"),
        C("src", "VARCHAR", "source address", dictionary=True),
        C("dst", "VARCHAR", "destination address", dictionary=True),
        C("ip_proto", "SMALLINT", "IP protocol number"),
        C("src_p", "INTEGER", "source port (ICMP: type)"),
        C("dst_p", "INTEGER", "destination port (ICMP: counterpart type or code, as Zeek)"),
        C("ip_len", "INTEGER", "IP total length from the header"),
        C("tcp_flags", "SMALLINT", "TCP flags, FIN=1 SYN=2 RST=4 PSH=8 ACK=16 URG=32 ECE=64 CWR=128 NS=256"),
        C("seq", "UINTEGER", "TCP sequence number"),
        C("ack", "UINTEGER", "TCP acknowledgement number"),
        C("window", "USMALLINT", "TCP window"),
        C("payload_offset", "BIGINT", "byte offset of the transport payload in the evidence file"),
        C("payload_len", "INTEGER", "payload bytes captured"),
        C("payload_wire_len", "INTEGER", "payload length per the headers"),
        C("frag", "UTINYINT",
          "IP fragment bits: 1 fragment, 2 more-fragments, 4 first fragment, 8 reassembled"),
        C("error", "VARCHAR", "why decoding stopped early, NULL when fine", dictionary=True),
        C("uid", "VARCHAR", "session uid", dictionary=True),
        C("is_orig", "BOOLEAN", "sent by the session's originator"),
    ),
    storage="parquet",
    key=("evidence_id", "frame", "tunnel_depth"),
))

SESSIONS = declare(Table(
    "sessions",
    "One row per connection, as Zeek's conn.log.",
    (
        C("uid", "VARCHAR", "deterministic session id: same evidence, same uid"),
        C("ts", "TIMESTAMPTZ", "first packet (UTC)"),
        C("ts_end", "TIMESTAMPTZ", "last packet (UTC)"),
        C("duration", "DOUBLE", "seconds from first to last packet; NULL for one packet"),
        C("proto", "VARCHAR", "tcp | udp | icmp | unknown_transport"),
        C("ip_proto", "SMALLINT", "IP protocol number"),
        C("orig_h", "VARCHAR", "originator address"),
        C("orig_p", "INTEGER", "originator port (ICMP: type)"),
        C("resp_h", "VARCHAR", "responder address"),
        C("resp_p", "INTEGER", "responder port (ICMP: counterpart type or code)"),
        C("service", "VARCHAR", "application protocol, NULL until detected"),
        C("orig_bytes", "BIGINT", "payload bytes sent by the originator (TCP: by sequence numbers)"),
        C("resp_bytes", "BIGINT", "payload bytes sent by the responder"),
        C("conn_state", "VARCHAR", "Zeek connection state (S0, SF, REJ, ...)"),
        C("history", "VARCHAR", "Zeek history letters (upper case: originator)"),
        C("missed_bytes", "BIGINT", "bytes in sequence gaps (estimate until reassembly)"),
        C("orig_pkts", "BIGINT", "packets from the originator"),
        C("orig_ip_bytes", "BIGINT", "IP-level bytes from the originator"),
        C("resp_pkts", "BIGINT", "packets from the responder"),
        C("resp_ip_bytes", "BIGINT", "IP-level bytes from the responder"),
        C("vlan", "INTEGER", "outer VLAN id of the first packet"),
        C("inner_vlan", "INTEGER", "inner VLAN id of the first packet"),
        C("tunnel", "VARCHAR", "encapsulation the connection was carried in"),
        C("tunnel_parents", "VARCHAR[]", "uids of the tunnel connections that carried it"),
        C("source", "VARCHAR", "what produced the row: pcap, zeek, suricata, ..."),
        C("evidence_id", "VARCHAR", "evidence the row was derived from"),
        C("first_frame", "BIGINT", "frame number of the first packet (lineage)"),
        C("last_frame", "BIGINT", "frame number of the last packet"),
        C("record_offset", "BIGINT", "byte offset of the log record (Zeek/Suricata logs)"),
        C("line", "BIGINT", "line number of the log record (Zeek/Suricata logs)"),
        C("member", "VARCHAR", "archive member the log record came from"),
    ),
    key=("uid",),
))
