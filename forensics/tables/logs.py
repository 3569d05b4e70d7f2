"""Log tables: one timeline of events, one normalised logons table, IDS alerts.

``events`` holds every log record Breachbook reads from host and service logs
(EVTX, Windows event JSON, syslog, web server error logs, Zeek logs without a
concept table of their own), one row per record, with the raw record kept as
JSON. ``logons`` holds the authentication-bearing subset in one shape whatever
the product (Windows Security 4624/4625/4648/..., RDP, share access, sshd,
sudo/su, Zeek ntlm/kerberos/ssh), so lateral movement can be drawn from one
table. ``alerts`` holds Suricata alerts and keeps Suricata's eve field names,
as no other product produces them.

Lineage columns are the same in all three: ``record_offset`` (byte offset of the
record in the file; in the decompressed member for ``.gz``/``.zip`` input),
``line`` (1-based line number for line-oriented files), ``record_id`` (the
log's own record number, e.g. EVTX EventRecordID) and ``member`` (the member of
a zip archive the record came from).
"""

from __future__ import annotations

from forensics._schema import Column as C
from forensics._schema import Table, declare

LINEAGE = (
    C("evidence_id", "VARCHAR", "evidence the row was read from"),
    C("record_offset", "BIGINT", "byte offset of the record (decompressed member for .gz/.zip)"),
    C("line", "BIGINT", "1-based line number for line-oriented files; NULL for EVTX"),
    C("record_id", "BIGINT", "the log's own record number (EVTX EventRecordID, NXLog RecordNumber)"),
    C("member", "VARCHAR", "member of a zip archive the record came from; NULL otherwise"),
)

EVENTS = declare(Table(
    "events",
    "One log record of any host or service log: the case timeline.",
    (
        C("ts", "TIMESTAMPTZ", "when the event happened (UTC); NULL when the record has no usable time"),
        C("host", "VARCHAR", "host that logged the event (EVTX Computer, syslog HOSTNAME, ...)"),
        C("source", "VARCHAR", "reader: evtx, winevent_json, syslog, weblog, zeek, suricata"),
        C("channel", "VARCHAR", "EVTX channel, syslog facility, Zeek log path"),
        C("provider", "VARCHAR", "EVTX provider, syslog APP-NAME (sshd, sudo, ...)"),
        C("event_id", "INTEGER", "Windows event ID; NULL for other logs"),
        C("type", "VARCHAR", "normalised kind: logon, logon_failed, process_start, network_connect, "
                             "service_install, share_access, ssh_accepted, sudo, ... NULL if none"),
        C("severity", "VARCHAR", "level as logged (syslog severity name, EVTX level, Apache level)"),
        C("user", "VARCHAR", "account the event is about (target user for logons)"),
        C("domain", "VARCHAR", "domain of that account"),
        C("src_ip", "VARCHAR", "source address named by the record"),
        C("src_port", "INTEGER", "source port named by the record"),
        C("dst", "VARCHAR", "destination host or address named by the record"),
        C("dst_port", "INTEGER", "destination port named by the record"),
        C("object", "VARCHAR", "object acted on: share, file, service name, registry key, URL"),
        C("process", "VARCHAR", "process image (path) that acted"),
        C("pid", "BIGINT", "its process id"),
        C("parent_process", "VARCHAR", "parent image of a started process"),
        C("command_line", "VARCHAR", "command line of a started process or installed service"),
        C("message", "VARCHAR", "the message text (rendered, or key=value pairs of the event data)"),
        C("raw", "JSON", "the raw record as JSON (a JSON string holding the line for text logs)"),
        *LINEAGE,
    ),
))

LOGONS = declare(Table(
    "logons",
    "One authentication-bearing record, normalised across Windows, RDP, SMB, ssh and sudo.",
    (
        C("ts", "TIMESTAMPTZ", "when (UTC)"),
        C("host", "VARCHAR", "host that logged the record"),
        C("source", "VARCHAR", "reader that produced the row: evtx, winevent_json, syslog, zeek, suricata"),
        C("event_id", "INTEGER", "Windows event ID; NULL for other logs"),
        C("action", "VARCHAR", "logon, logoff, explicit_credentials, special_privileges, kerberos_tgt, "
                               "kerberos_service_ticket, kerberos_preauth_failed, ntlm_validation, "
                               "ntlm, rdp_auth, rdp_connect, rdp_session_logon, rdp_shell_start, "
                               "rdp_logoff, rdp_disconnect, rdp_reconnect, winrm_auth, "
                               "share_access, ssh, sudo, su"),
        C("success", "BOOLEAN", "true for a successful logon, false for a failure, NULL when not stated"),
        C("logon_type", "INTEGER", "Windows logon type (2 interactive, 3 network, 10 remote interactive)"),
        C("user", "VARCHAR", "account logged on (Windows Target*, ssh user, sudo target user)"),
        C("domain", "VARCHAR", "its domain or realm as logged"),
        C("user_sid", "VARCHAR", "its SID"),
        C("subject_user", "VARCHAR", "account that asked for the logon (Windows Subject*, sudo caller)"),
        C("subject_domain", "VARCHAR", "its domain"),
        C("src_host", "VARCHAR", "host the logon came from (workstation name, source host)"),
        C("src_ip", "VARCHAR", "address the logon came from (IPv4-mapped IPv6 shown as IPv4)"),
        C("src_port", "INTEGER", "source port"),
        C("dst_host", "VARCHAR", "host logged on to (the logging computer unless the record names another)"),
        C("dst_ip", "VARCHAR", "address logged on to, when the record names it"),
        C("auth_package", "VARCHAR", "Kerberos, NTLM, Negotiate, ...; ssh method (password, publickey)"),
        C("logon_process", "VARCHAR", "Windows logon process (Kerberos, NtLmSsp, seclogo, ...)"),
        C("process", "VARCHAR", "process that performed or requested the logon"),
        C("status", "VARCHAR", "failure status code (0xc000006d, Kerberos code, ssh reason)"),
        C("logon_id", "VARCHAR", "logon session id (hex) to join logon, privileges and logoff"),
        C("service", "VARCHAR", "service, share or SPN the logon was for"),
        *LINEAGE,
    ),
))

ALERTS = declare(Table(
    "alerts",
    "One IDS alert (Suricata eve ``alert``), with Suricata's own field names.",
    (
        C("ts", "TIMESTAMPTZ", "time of the packet that raised the alert (UTC)"),
        C("uid", "VARCHAR", "flow id as text: joins the sessions and app rows of the same eve file"),
        C("src_ip", "VARCHAR", "source address of the alerting packet"),
        C("src_port", "INTEGER", "its source port"),
        C("dest_ip", "VARCHAR", "destination address of the alerting packet"),
        C("dest_port", "INTEGER", "its destination port"),
        C("proto", "VARCHAR", "transport protocol (lower case)"),
        C("app_proto", "VARCHAR", "application protocol Suricata detected"),
        C("direction", "VARCHAR", "to_server or to_client when logged"),
        C("action", "VARCHAR", "allowed or blocked"),
        C("gid", "INTEGER", "generator id"),
        C("signature_id", "BIGINT", "signature id (sid)"),
        C("rev", "INTEGER", "signature revision"),
        C("signature", "VARCHAR", "signature message"),
        C("category", "VARCHAR", "classtype description"),
        C("severity", "INTEGER", "priority, 1 (high) to 4"),
        C("sensor", "VARCHAR", "sensor name (eve ``host``) or capture interface"),
        C("pcap_cnt", "BIGINT", "packet number in the capture Suricata read (lineage into the pcap)"),
        C("metadata", "JSON", "the rule's metadata keywords"),
        C("raw", "JSON", "the eve record as logged"),
        C("source", "VARCHAR", "reader that produced the row: suricata"),
        *LINEAGE,
    ),
))
