"""Application-layer tables: HTTP, DNS, TLS and files, whatever produced them.

Zeek logs, Suricata eve records, web server access logs and (later) our own
pcap protocol parsers fill the same tables, told apart by ``source``. Columns
carry the field names of Zeek's http.log, dns.log, ssl.log and files.log
without the ``id.`` prefix, lower-cased (Zeek's ``AA``/``TC``/``RD``/``RA``/``Z``
become ``aa``/``tc``/``rd``/``ra``/``z``), so rows compare directly with Zeek's.
Two renames avoid clashes: files.log's ``source`` (the protocol a file came
over) is ``file_source`` here, and the provenance column is ``source``.
A few columns no Zeek log has (Suricata's JA3/JA4, IIS time-taken) are added
at the end of the Zeek ones. Lineage columns are those of the log tables.
"""

from __future__ import annotations

from forensics._schema import Column as C
from forensics._schema import Table, declare
from forensics.tables.logs import LINEAGE

_CONN = (
    C("ts", "TIMESTAMPTZ", "time of the first message of the transaction (UTC)"),
    C("uid", "VARCHAR", "session uid: Zeek's uid, Suricata's flow id as text"),
    C("orig_h", "VARCHAR", "originator (client) address"),
    C("orig_p", "INTEGER", "originator port"),
    C("resp_h", "VARCHAR", "responder (server) address"),
    C("resp_p", "INTEGER", "responder port"),
)

_PROVENANCE = (C("source", "VARCHAR", "what produced the row: zeek, suricata, weblog, pcap"), *LINEAGE)

HTTP = declare(Table(
    "http",
    "One HTTP request/response pair, as Zeek's http.log (web server access logs too).",
    (
        *_CONN,
        C("trans_depth", "INTEGER", "position of the transaction in its connection"),
        C("method", "VARCHAR", "request method"),
        C("host", "VARCHAR", "Host header"),
        C("uri", "VARCHAR", "request URI (path and query)"),
        C("referrer", "VARCHAR", "Referer header"),
        C("version", "VARCHAR", "HTTP version (1.1, 2, ...)"),
        C("user_agent", "VARCHAR", "User-Agent header"),
        C("origin", "VARCHAR", "Origin header"),
        C("request_body_len", "BIGINT", "request body bytes (IIS: cs-bytes, whole request)"),
        C("response_body_len", "BIGINT", "response body bytes (IIS: sc-bytes, whole response)"),
        C("status_code", "INTEGER", "response status code"),
        C("status_msg", "VARCHAR", "response reason phrase"),
        C("info_code", "INTEGER", "last 1xx status code"),
        C("info_msg", "VARCHAR", "last 1xx reason phrase"),
        C("tags", "VARCHAR[]", "Zeek tags"),
        C("username", "VARCHAR", "user name from basic auth or the web server's authuser"),
        C("password", "VARCHAR", "password from basic auth, when the log kept it"),
        C("proxied", "VARCHAR[]", "proxy headers seen"),
        C("orig_fuids", "VARCHAR[]", "file ids sent by the client"),
        C("orig_filenames", "VARCHAR[]", "file names sent by the client"),
        C("orig_mime_types", "VARCHAR[]", "MIME types sent by the client"),
        C("resp_fuids", "VARCHAR[]", "file ids sent by the server"),
        C("resp_filenames", "VARCHAR[]", "file names sent by the server"),
        C("resp_mime_types", "VARCHAR[]", "MIME types sent by the server"),
        C("content_type", "VARCHAR", "response Content-Type (Suricata http_content_type)"),
        C("time_taken", "DOUBLE", "seconds the server took (IIS time-taken, Apache %D/%T)"),
        *_PROVENANCE,
    ),
))

DNS = declare(Table(
    "dns",
    "One DNS query/response, as Zeek's dns.log.",
    (
        *_CONN,
        C("proto", "VARCHAR", "transport protocol"),
        C("trans_id", "INTEGER", "DNS transaction id"),
        C("rtt", "DOUBLE", "seconds between query and response"),
        C("query", "VARCHAR", "queried name"),
        C("qclass", "INTEGER", "query class"),
        C("qclass_name", "VARCHAR", "query class name"),
        C("qtype", "INTEGER", "query type"),
        C("qtype_name", "VARCHAR", "query type name (A, AAAA, ...)"),
        C("rcode", "INTEGER", "response code"),
        C("rcode_name", "VARCHAR", "response code name (NOERROR, NXDOMAIN, ...)"),
        C("aa", "BOOLEAN", "authoritative answer"),
        C("tc", "BOOLEAN", "truncated"),
        C("rd", "BOOLEAN", "recursion desired"),
        C("ra", "BOOLEAN", "recursion available"),
        C("z", "INTEGER", "reserved bits"),
        C("answers", "VARCHAR[]", "answer data"),
        C("ttls", "VARCHAR[]", "answer TTLs in seconds, as text (one per answer)"),
        C("rejected", "BOOLEAN", "the server rejected the query"),
        C("opcode", "INTEGER", "DNS opcode"),
        C("opcode_name", "VARCHAR", "DNS opcode name"),
        *_PROVENANCE,
    ),
))

TLS = declare(Table(
    "tls",
    "One TLS/SSL session, as Zeek's ssl.log (plus certificate and fingerprint fields).",
    (
        *_CONN,
        C("version", "VARCHAR", "negotiated version (TLSv12, TLSv13, ...)"),
        C("cipher", "VARCHAR", "negotiated cipher suite"),
        C("curve", "VARCHAR", "key exchange curve"),
        C("server_name", "VARCHAR", "SNI"),
        C("resumed", "BOOLEAN", "session was resumed"),
        C("last_alert", "VARCHAR", "last alert seen"),
        C("next_protocol", "VARCHAR", "ALPN/NPN protocol chosen"),
        C("established", "BOOLEAN", "handshake completed"),
        C("ssl_history", "VARCHAR", "Zeek handshake history letters"),
        C("cert_chain_fps", "VARCHAR[]", "server certificate chain fingerprints"),
        C("client_cert_chain_fps", "VARCHAR[]", "client certificate chain fingerprints"),
        C("sni_matches_cert", "BOOLEAN", "SNI matched the certificate"),
        C("subject", "VARCHAR", "server certificate subject"),
        C("issuer", "VARCHAR", "server certificate issuer"),
        C("serial", "VARCHAR", "server certificate serial"),
        C("not_valid_before", "TIMESTAMPTZ", "certificate validity start"),
        C("not_valid_after", "TIMESTAMPTZ", "certificate validity end"),
        C("ja3", "VARCHAR", "JA3 client fingerprint (MD5)"),
        C("ja3s", "VARCHAR", "JA3S server fingerprint (MD5)"),
        C("ja4", "VARCHAR", "JA4 client fingerprint"),
        *_PROVENANCE,
    ),
))

FILES = declare(Table(
    "files",
    "One file seen on the wire, as Zeek's files.log (Suricata fileinfo too).",
    (
        C("ts", "TIMESTAMPTZ", "time the file was first seen (UTC)"),
        C("fuid", "VARCHAR", "file id (Zeek fuid; Suricata flow id and file id)"),
        C("uid", "VARCHAR", "session uid the file was carried in"),
        C("orig_h", "VARCHAR", "originator address of that session"),
        C("orig_p", "INTEGER", "originator port"),
        C("resp_h", "VARCHAR", "responder address"),
        C("resp_p", "INTEGER", "responder port"),
        C("file_source", "VARCHAR", "protocol it came over (Zeek files.log ``source``: HTTP, SMB)"),
        C("depth", "INTEGER", "depth in the protocol (e.g. HTTP transaction)"),
        C("analyzers", "VARCHAR[]", "analyzers that ran"),
        C("mime_type", "VARCHAR", "MIME type sniffed from the content"),
        C("filename", "VARCHAR", "file name given by the protocol"),
        C("duration", "DOUBLE", "seconds from first to last byte"),
        C("local_orig", "BOOLEAN", "originated locally"),
        C("is_orig", "BOOLEAN", "sent by the session's originator"),
        C("seen_bytes", "BIGINT", "bytes seen"),
        C("total_bytes", "BIGINT", "total size announced by the protocol"),
        C("missing_bytes", "BIGINT", "bytes missed"),
        C("overflow_bytes", "BIGINT", "bytes out of the reassembly buffer"),
        C("timedout", "BOOLEAN", "analysis timed out"),
        C("parent_fuid", "VARCHAR", "container file id"),
        C("md5", "VARCHAR", "MD5 of the content"),
        C("sha1", "VARCHAR", "SHA-1 of the content"),
        C("sha256", "VARCHAR", "SHA-256 of the content"),
        C("extracted", "VARCHAR", "name of the extracted file, when extracted"),
        C("extracted_cutoff", "BOOLEAN", "extraction was cut short"),
        C("extracted_size", "BIGINT", "bytes extracted"),
        C("tx_hosts", "VARCHAR[]", "sending hosts (files.log before Zeek 5)"),
        C("rx_hosts", "VARCHAR[]", "receiving hosts (files.log before Zeek 5)"),
        C("magic", "VARCHAR", "libmagic description (Suricata)"),
        C("stored", "BOOLEAN", "written to the filestore (Suricata)"),
        C("state", "VARCHAR", "CLOSED, TRUNCATED, ... (Suricata)"),
        *_PROVENANCE,
    ),
))
