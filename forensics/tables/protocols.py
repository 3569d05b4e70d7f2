"""Application tables filled from reassembled pcap sessions (and stream anomalies).

``http``, ``dns``, ``tls`` and ``files`` are declared in :mod:`forensics.tables.app`
(shared with Zeek and Suricata logs); the tables here are the ones no other
source fills yet. Columns carry the field names of the matching Zeek log
(smb_files.log, smb_mapping.log, ntlm.log, ftp.log, smtp.log, ssh.log,
kerberos.log, rdp.log, dce_rpc.log) without the ``id.`` prefix; a dot in a
Zeek field becomes an underscore (``data_channel.passive`` ->
``data_channel_passive``, ``times.modified`` -> ``times_modified``). Columns
Zeek has no field for come after the Zeek ones. Lineage is that of the log
tables: ``record_offset`` is the evidence byte offset of the frame that carried
the row's first byte and ``record_id`` that frame's number.
"""

from __future__ import annotations

from forensics._schema import Column as C
from forensics._schema import Table, declare
from forensics.tables.logs import LINEAGE

_CONN = (
    C("ts", "TIMESTAMPTZ", "time of the first packet of the exchange (UTC)"),
    C("uid", "VARCHAR", "session uid"),
    C("orig_h", "VARCHAR", "originator (client) address"),
    C("orig_p", "INTEGER", "originator port"),
    C("resp_h", "VARCHAR", "responder (server) address"),
    C("resp_p", "INTEGER", "responder port"),
)
_PROV = (C("source", "VARCHAR", "what produced the row: pcap (or zeek)"), *LINEAGE)

HTTP_BODIES = declare(
    Table(
        "http_bodies",
        "One HTTP message body (request or response) located in its reassembled stream: what carving reads.",
        (
            *_CONN,
            C("trans_depth", "INTEGER", "the transaction in its connection (joins http.trans_depth)"),
            C("is_orig", "BOOLEAN", "true for a request body, false for a response body"),
            C("content_type", "VARCHAR", "Content-Type header"),
            C("content_encoding", "VARCHAR", "Content-Encoding header (gzip, deflate, ...)"),
            C("transfer_encoding", "VARCHAR", "Transfer-Encoding header (chunked)"),
            C("content_length", "BIGINT", "Content-Length header, when given and valid"),
            C("filename", "VARCHAR", "file name from Content-Disposition, when given"),
            C("stream_start", "BIGINT", "stream offset (in that direction) of the body's first byte"),
            C("stream_end", "BIGINT", "stream offset one past the body's last byte (framing included)"),
            C("wire_len", "BIGINT", "body bytes as sent (chunk framing removed, still encoded)"),
            C("body_len", "BIGINT", "body bytes after content decoding (what http.*_body_len reports)"),
            C("missing_bytes", "BIGINT", "body bytes lost in stream gaps"),
            C("decoded", "BOOLEAN", "content encoding was undone"),
            C("truncated", "BOOLEAN", "decoding stopped at the size cap (possible decompression bomb)"),
            *_PROV,
        ),
    )
)

SMB_FILES = declare(
    Table(
        "smb_files",
        "One action on a file over SMB, as Zeek's smb_files.log.",
        (
            *_CONN,
            C("fuid", "VARCHAR", "file id, set once file data was seen (deterministic, not Zeek's)"),
            C(
                "action",
                "VARCHAR",
                "SMB::FILE_OPEN, FILE_READ, FILE_WRITE, FILE_DELETE, FILE_RENAME, FILE_CLOSE",
            ),
            C("path", "VARCHAR", "tree (share) path, \\\\host\\share"),
            C("name", "VARCHAR", "file name within the share (<share_root> for the share itself)"),
            C("size", "BIGINT", "file size (end of file) reported by the server"),
            C("prev_name", "VARCHAR", "name before a rename"),
            C("times_modified", "TIMESTAMPTZ", "last write time"),
            C("times_accessed", "TIMESTAMPTZ", "last access time"),
            C("times_created", "TIMESTAMPTZ", "creation time"),
            C("times_changed", "TIMESTAMPTZ", "change time"),
            C("smb_version", "VARCHAR", "SMB1, SMB2 or SMB3"),
            C("data_offset", "BIGINT", "offset of the first read or write in the file"),
            C("data_len", "BIGINT", "bytes read or written by this session for this open"),
            C("ops", "BIGINT", "read or write requests folded into this row"),
            C("named_pipe", "BOOLEAN", "the file is a named pipe (svcctl, samr, lsarpc, ...)"),
            *_PROV,
        ),
    )
)

SMB_MAPPING = declare(
    Table(
        "smb_mapping",
        "One SMB tree connect (share mapping), as Zeek's smb_mapping.log.",
        (
            *_CONN,
            C("path", "VARCHAR", "share path, e.g. \\\\host\\ADMIN$"),
            C("service", "VARCHAR", "service type (SMB1) or share type name"),
            C("native_file_system", "VARCHAR", "file system named by the server (SMB1)"),
            C("share_type", "VARCHAR", "DISK, PIPE or PRINT"),
            C("status", "VARCHAR", "NT status of the response (SUCCESS, ACCESS_DENIED, ...)"),
            C("smb_version", "VARCHAR", "SMB1, SMB2 or SMB3"),
            *_PROV,
        ),
    )
)

NTLM = declare(
    Table(
        "ntlm",
        "One NTLM authentication (NTLMSSP over SMB, HTTP, DCE-RPC, ...), as Zeek's ntlm.log.",
        (
            *_CONN,
            C("username", "VARCHAR", "user name from the AUTHENTICATE message"),
            C("hostname", "VARCHAR", "client workstation name"),
            C("domainname", "VARCHAR", "domain name from the AUTHENTICATE message"),
            C("server_nb_computer_name", "VARCHAR", "server NetBIOS name (CHALLENGE target info)"),
            C("server_dns_computer_name", "VARCHAR", "server DNS name"),
            C("server_tree_name", "VARCHAR", "forest DNS name"),
            C("success", "BOOLEAN", "the session setup that carried it succeeded"),
            C("status", "VARCHAR", "NT status of that response"),
            *_PROV,
        ),
    )
)

FTP = declare(
    Table(
        "ftp",
        "One FTP command and its reply, as Zeek's ftp.log (data channel tied to the command).",
        (
            *_CONN,
            C("user", "VARCHAR", "user name of the session"),
            C("password", "VARCHAR", "password sent (kept: evidence of credential exposure)"),
            C("command", "VARCHAR", "command"),
            C("arg", "VARCHAR", "argument (for RETR/STOR/..., a ftp:// URL as Zeek writes it)"),
            C("mime_type", "VARCHAR", "MIME type of the file transferred"),
            C("file_size", "BIGINT", "size of the file transferred (from the reply or the data channel)"),
            C("reply_code", "INTEGER", "reply code"),
            C("reply_msg", "VARCHAR", "reply text"),
            C(
                "data_channel_passive",
                "BOOLEAN",
                "data channel opened by PASV/EPSV (true) or PORT/EPRT (false)",
            ),
            C("data_channel_orig_h", "VARCHAR", "data channel originator"),
            C("data_channel_resp_h", "VARCHAR", "data channel responder"),
            C("data_channel_resp_p", "INTEGER", "data channel responder port"),
            C("fuid", "VARCHAR", "file id of the transfer"),
            C("data_uid", "VARCHAR", "uid of the data connection that carried the transfer"),
            *_PROV,
        ),
    )
)

SMTP = declare(
    Table(
        "smtp",
        "One SMTP transaction (message), as Zeek's smtp.log, plus attachment names.",
        (
            *_CONN,
            C("trans_depth", "INTEGER", "message number in the connection"),
            C("helo", "VARCHAR", "HELO/EHLO argument"),
            C("mailfrom", "VARCHAR", "MAIL FROM address"),
            C("rcptto", "VARCHAR[]", "RCPT TO addresses"),
            C("date", "VARCHAR", "Date header"),
            C("from", "VARCHAR", "From header"),
            C("to", "VARCHAR[]", "To header addresses"),
            C("cc", "VARCHAR[]", "Cc header addresses"),
            C("reply_to", "VARCHAR", "Reply-To header"),
            C("msg_id", "VARCHAR", "Message-ID header"),
            C("in_reply_to", "VARCHAR", "In-Reply-To header"),
            C("subject", "VARCHAR", "Subject header (RFC 2047 words decoded)"),
            C("x_originating_ip", "VARCHAR", "X-Originating-IP header"),
            C("first_received", "VARCHAR", "first Received header"),
            C("second_received", "VARCHAR", "second Received header"),
            C("last_reply", "VARCHAR", "last server reply in the transaction"),
            C("path", "VARCHAR[]", "hosts the message went through (from Received headers and the session)"),
            C("user_agent", "VARCHAR", "User-Agent or X-Mailer header"),
            C("tls", "BOOLEAN", "the session switched to TLS (STARTTLS)"),
            C("fuids", "VARCHAR[]", "file ids of the MIME parts"),
            C("filenames", "VARCHAR[]", "attachment file names"),
            C("mime_types", "VARCHAR[]", "Content-Type of each MIME part"),
            C("body_len", "BIGINT", "message bytes (DATA/BDAT content)"),
            *_PROV,
        ),
    )
)

SSH = declare(
    Table(
        "ssh",
        "One SSH connection, as Zeek's ssh.log, with HASSH fingerprints.",
        (
            *_CONN,
            C("version", "INTEGER", "protocol major version (2, or 1)"),
            C("auth_success", "BOOLEAN", "authentication appeared to succeed (heuristic, NULL if unknown)"),
            C("auth_attempts", "INTEGER", "authentication attempts seen (heuristic)"),
            C("direction", "VARCHAR", "INBOUND or OUTBOUND when known"),
            C("client", "VARCHAR", "client banner"),
            C("server", "VARCHAR", "server banner"),
            C("cipher_alg", "VARCHAR", "negotiated cipher"),
            C("mac_alg", "VARCHAR", "negotiated MAC"),
            C("compression_alg", "VARCHAR", "negotiated compression"),
            C("kex_alg", "VARCHAR", "negotiated key exchange"),
            C("host_key_alg", "VARCHAR", "negotiated host key algorithm"),
            C("host_key", "VARCHAR", "server host key fingerprint (MD5, colon hex)"),
            C("hassh", "VARCHAR", "HASSH of the client KEXINIT (MD5)"),
            C("hassh_server", "VARCHAR", "HASSH of the server KEXINIT (MD5)"),
            C("hassh_algorithms", "VARCHAR", "the string the client HASSH hashes"),
            C("hassh_server_algorithms", "VARCHAR", "the string the server HASSH hashes"),
            *_PROV,
        ),
    )
)

KERBEROS = declare(
    Table(
        "kerberos",
        "One Kerberos request/response (AS, TGS), as Zeek's kerberos.log.",
        (
            *_CONN,
            C("request_type", "VARCHAR", "AS or TGS (or AP for a bare AP-REQ)"),
            C("client", "VARCHAR", "client principal, user/REALM"),
            C("service", "VARCHAR", "service principal, e.g. krbtgt/REALM or cifs/host"),
            C("success", "BOOLEAN", "a ticket was issued"),
            C("error_code", "INTEGER", "KRB-ERROR code"),
            C("error_msg", "VARCHAR", "KRB-ERROR name (KDC_ERR_PREAUTH_REQUIRED, ...)"),
            C("from", "TIMESTAMPTZ", "ticket start asked for"),
            C("till", "TIMESTAMPTZ", "ticket expiry asked for"),
            C("cipher", "VARCHAR", "encryption type of the issued ticket"),
            C("forwardable", "BOOLEAN", "forwardable was asked for"),
            C("renewable", "BOOLEAN", "renewable was asked for"),
            C("req_etypes", "VARCHAR[]", "encryption types the client offered (RC4 alone hints at roasting)"),
            C("realm", "VARCHAR", "realm of the request"),
            *_PROV,
        ),
    )
)

RDP = declare(
    Table(
        "rdp",
        "One RDP connection's negotiation, as Zeek's rdp.log.",
        (
            *_CONN,
            C("cookie", "VARCHAR", "mstshash cookie (user name) from the connection request"),
            C("result", "VARCHAR", "negotiation result"),
            C("security_protocol", "VARCHAR", "security protocol selected (RDP, SSL, HYBRID, ...)"),
            C("requested_protocols", "VARCHAR[]", "protocols the client asked for"),
            C("client_build", "VARCHAR", "client build (from client core data, standard RDP security only)"),
            C("client_name", "VARCHAR", "client computer name (same)"),
            C("keyboard_layout", "VARCHAR", "keyboard layout id"),
            C("desktop_width", "INTEGER", "desktop width"),
            C("desktop_height", "INTEGER", "desktop height"),
            C("encryption_method", "VARCHAR", "standard RDP security encryption method"),
            *_PROV,
        ),
    )
)

DCE_RPC = declare(
    Table(
        "dce_rpc",
        "One DCE/RPC request/response, as Zeek's dce_rpc.log.",
        (
            *_CONN,
            C("rtt", "DOUBLE", "seconds from request to response"),
            C("named_pipe", "VARCHAR", "named pipe or TCP port the call went over"),
            C("endpoint", "VARCHAR", "interface name (svcctl, samr, lsarpc, drsuapi, ...)"),
            C("operation", "VARCHAR", "operation name (CreateServiceW, ...)"),
            C("interface_uuid", "VARCHAR", "interface UUID bound"),
            C("opnum", "INTEGER", "operation number"),
            *_PROV,
        ),
    )
)

STREAM_GAPS = declare(
    Table(
        "stream_gaps",
        "A range of a TCP stream never captured (lost packets, snaplen cut, capture started late).",
        (
            C("uid", "VARCHAR", "session uid"),
            C("is_orig", "BOOLEAN", "direction: true for originator bytes"),
            C("stream_start", "BIGINT", "stream offset of the first missing byte"),
            C("stream_end", "BIGINT", "stream offset one past the last missing byte"),
            C("length", "BIGINT", "missing bytes"),
            C("evidence_id", "VARCHAR", "evidence the session came from"),
        ),
    )
)

STREAM_CONFLICTS = declare(
    Table(
        "stream_conflicts",
        "Bytes of a TCP stream sent twice with different content (first copy kept): an evasion signal.",
        (
            C("uid", "VARCHAR", "session uid"),
            C("is_orig", "BOOLEAN", "direction: true for originator bytes"),
            C("stream_start", "BIGINT", "stream offset of the overlap"),
            C("stream_end", "BIGINT", "stream offset one past it"),
            C("differing", "BIGINT", "bytes that differ between the copies"),
            C("first_frame", "BIGINT", "frame whose copy was kept"),
            C("later_frame", "BIGINT", "frame whose copy was discarded"),
            C("evidence_id", "VARCHAR", "evidence the session came from"),
        ),
    )
)
