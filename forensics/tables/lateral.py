"""Breach-scope tables: host identity, lateral movement, scope, exfiltration, detections, risk.

These are derived tables: each is rebuilt as a whole by the function that owns
it (:func:`forensics.lateral.build_lateral`, :func:`forensics.scope.scope`,
:func:`forensics.exfil.exfil`, :func:`forensics.detect.detect`,
:func:`forensics.risk.load_inventory`, :func:`forensics.risk.risk_register`),
never by the ingest engine, so none has an ``evidence_id`` column. Rows point
back to the rows that prove them in a ``rows`` column: a JSON array of
``{"table": ..., "key": {...}}`` with canonical row keys (text values, as the
workflow tables use), e.g. ``{"table": "sessions", "key": {"uid": "C4f..."}}``
or ``{"table": "logons", "key": {"evidence_id": "..", "member": null,
"record_offset": "1234"}}``.
"""

from __future__ import annotations

from forensics._schema import Column as C
from forensics._schema import Table, declare

_ROWS = C("rows", "JSON", "rows that prove it: JSON array of {table, key}")

HOSTS = declare(Table(
    "hosts",
    "One host of the case with every name and address it was seen under (built by build_lateral).",
    (
        C("host_id", "VARCHAR", "canonical id: upper-case short name, or the address when no name is known"),
        C("names", "VARCHAR[]", "names seen (short, upper case)"),
        C("addresses", "VARCHAR[]", "addresses seen"),
        C("first_seen", "TIMESTAMPTZ", "earliest time a name or address binding was seen"),
        C("last_seen", "TIMESTAMPTZ", "latest time a binding was seen"),
        C("internal", "BOOLEAN", "an address is in the internal ranges, or the host logged events"),
        C("in_inventory", "BOOLEAN", "the asset inventory lists it"),
        C("sources", "VARCHAR[]", "where the bindings came from"),
    ),
    key=("host_id",),
))

HOST_NAMES = declare(Table(
    "host_names",
    "One name or address of a host over a time span, and where that binding was learned.",
    (
        C("host_id", "VARCHAR", "the host"),
        C("value", "VARCHAR", "the name (short, upper case) or address"),
        C("kind", "VARCHAR", "name | alias | address"),
        C("first_seen", "TIMESTAMPTZ", "first time seen bound (NULL: timeless, e.g. inventory)"),
        C("last_seen", "TIMESTAMPTZ", "last time seen bound"),
        C("source", "VARCHAR", "inventory, logon, sysmon, session_port, dns, ntlm, smb_mapping, log_host"),
        C("observations", "BIGINT", "how many records bound it"),
    ),
))

LATERAL_EDGES = declare(Table(
    "lateral_edges",
    "One lateral movement (or contact) from a host to a host, fused from host logs and captures.",
    (
        C("edge_id", "VARCHAR", "deterministic id (hash of technique, hosts, account, time and proofs)"),
        C("ts", "TIMESTAMPTZ", "start: earliest capture proof, else earliest host-log proof (UTC)"),
        C("ts_end", "TIMESTAMPTZ", "last proof"),
        C("src", "VARCHAR", "source host_id; NULL when no record names it"),
        C("dst", "VARCHAR", "destination host_id; NULL when no record names it"),
        C("src_addr", "VARCHAR", "source address as recorded"),
        C("dst_addr", "VARCHAR", "destination address as recorded"),
        C("account", "VARCHAR", "account used (lower case, no domain); NULL when unknown"),
        C("domain", "VARCHAR", "its domain as logged"),
        C("technique", "VARCHAR", "psexec, service_install, service_control, wmi, dcom, winrm, rdp, ssh, "
                                  "smb_copy, scheduled_task, network_logon, explicit_credentials, ..."),
        C("family", "VARCHAR", "service, wmi, dcom, winrm, rdp, ssh, smb_copy, scheduled_task, logon, "
                               "credentials, kerberos, rpc, smb, ..."),
        C("protocol", "VARCHAR", "smb, dce_rpc, http (WinRM), rdp, ssh, kerberos, ntlm, tds, ..."),
        C("dst_port", "INTEGER", "destination port of the carrying connection when known"),
        C("success", "BOOLEAN", "true: it worked; false: only failures; NULL: not stated"),
        C("explicit", "BOOLEAN", "the source passed credentials explicitly (4648, runas, pass-the-hash)"),
        C("level", "VARCHAR", "execution (code ran on dst) | logon (credentials accepted) | contact"),
        C("proof", "VARCHAR", "host_log | capture | both"),
        C("n_rows", "BIGINT", "rows that prove it (rows may list fewer)"),
        C("summary", "VARCHAR", "what the proofs say, in words"),
        _ROWS,
    ),
    key=("edge_id",),
))

SCOPE = declare(Table(
    "scope",
    "One host or account reached from patient zero through time-respecting lateral movement.",
    (
        C("run_id", "VARCHAR", "the scope run (hash of its parameters)"),
        C("node", "VARCHAR", "host_id or account name"),
        C("kind", "VARCHAR", "host | account"),
        C("level", "VARCHAR", "hosts: patient_zero | execution | logon | contact (highest reached); "
                              "accounts: patient_zero | used | dumped"),
        C("confidence", "VARCHAR", "compromised (execution proven) | credentials (logon proven) | "
                                   "contact (network contact only)"),
        C("reached_at", "TIMESTAMPTZ", "earliest time at that level (the compromise time for execution)"),
        C("first_contact", "TIMESTAMPTZ", "earliest time at any level"),
        C("via_edge", "VARCHAR", "edge_id (or session uid for contact) that reached it"),
        C("via_technique", "VARCHAR", "technique of that edge"),
        C("chain", "VARCHAR[]", "edge_ids from patient zero to it, in order"),
        C("depth", "INTEGER", "hops from patient zero"),
        C("reason", "VARCHAR", "why, in words"),
        C("start", "VARCHAR", "patient zero(s) and start time of the run"),
        C("computed_at", "TIMESTAMPTZ", "when the run was computed (UTC)"),
    ),
))

EXFIL = declare(Table(
    "exfil",
    "Data leaving: bytes per internal host, destination and hour; files sent out; DNS tunnelling.",
    (
        C("kind", "VARCHAR", "bytes | file | dns_tunnel"),
        C("src", "VARCHAR", "internal host_id"),
        C("src_addr", "VARCHAR", "internal address"),
        C("dst", "VARCHAR", "external address (or tunnel domain for dns_tunnel)"),
        C("dst_name", "VARCHAR", "name of the destination (TLS SNI, HTTP Host, DNS)"),
        C("hour", "TIMESTAMPTZ", "hour (UTC) the bytes left; first hour for files and tunnels"),
        C("channel", "VARCHAR", "tls | ssh | http | ftp | smtp | dns | clear | unknown"),
        C("encryption", "VARCHAR", "encrypted | clear | unknown"),
        C("bytes", "BIGINT", "bytes sent out (payload; decoded payload estimate for dns_tunnel)"),
        C("sessions", "BIGINT", "connections (or queries) counted"),
        C("first", "TIMESTAMPTZ", "first one"),
        C("last", "TIMESTAMPTZ", "last one"),
        C("score", "DOUBLE", "0-1: how strongly it looks like exfiltration (dns_tunnel, file)"),
        C("detail", "VARCHAR", "file name, entropy, label lengths, ..."),
        _ROWS,
    ),
))

DETECTIONS = declare(Table(
    "detections",
    "A signature-free detection: beaconing, first-seen rare destination or unusually long connection.",
    (
        C("detection_id", "VARCHAR", "deterministic id"),
        C("kind", "VARCHAR", "beacon | rare_destination | long_connection"),
        C("src", "VARCHAR", "source host_id"),
        C("src_addr", "VARCHAR", "source address"),
        C("dst", "VARCHAR", "destination address"),
        C("dst_name", "VARCHAR", "destination name when known"),
        C("dst_port", "INTEGER", "destination port"),
        C("score", "DOUBLE", "0-1, higher is more suspicious"),
        C("first", "TIMESTAMPTZ", "first connection behind it"),
        C("last", "TIMESTAMPTZ", "last connection behind it"),
        C("count", "BIGINT", "connections behind it"),
        C("detail", "VARCHAR", "interval and jitter, rarity, duration, ..."),
        _ROWS,
    ),
    key=("detection_id",),
))

ASSETS = declare(Table(
    "assets",
    "One asset inventory row (host or address, owner, business process, damage), with a warning if bad.",
    (
        C("line", "INTEGER", "line in the inventory CSV (1 = header)"),
        C("host", "VARCHAR", "host as written"),
        C("address", "VARCHAR", "address as written"),
        C("host_id", "VARCHAR", "the case host it resolves to; NULL when unknown to the case"),
        C("owner", "VARCHAR", "owner"),
        C("business_process", "VARCHAR", "business process it serves"),
        C("damage_level", "INTEGER", "1 small, 2 moderate, 3 medium, 4 large, 5 critical; NULL if bad"),
        C("value", "DOUBLE", "money value of the damage, when given"),
        C("currency", "VARCHAR", "currency of value (from the column name, e.g. value_eur -> EUR)"),
        C("role", "VARCHAR", "role column when given"),
        C("warning", "VARCHAR", "what is wrong with the row (unknown host, bad level, ...); NULL if fine"),
        C("source", "VARCHAR", "inventory file name"),
    ),
))

RISK_REGISTER = declare(Table(
    "risk_register",
    "One risk per asset: probability from the evidence, damage from the inventory, level and treatment.",
    (
        C("host", "VARCHAR", "asset host as in the inventory"),
        C("address", "VARCHAR", "asset address"),
        C("host_id", "VARCHAR", "case host_id"),
        C("business_process", "VARCHAR", "business process"),
        C("owner", "VARCHAR", "owner"),
        C("probability_level", "INTEGER", "1 very low, 2 low, 3 medium, 4 high, 5 very high"),
        C("probability_label", "VARCHAR", "its name"),
        C("probability", "DOUBLE", "representative probability of the level (0-1)"),
        C("probability_rule", "VARCHAR", "the rule that set the level"),
        C("damage_level", "INTEGER", "1 small .. 5 critical"),
        C("damage_label", "VARCHAR", "its name"),
        C("risk", "INTEGER", "damage_level x probability_level"),
        C("risk_level", "VARCHAR", "L | M | H from the risk-level matrix"),
        C("acceptability", "VARCHAR", "A acceptable | U unacceptable"),
        C("value", "DOUBLE", "money value of the damage, when given"),
        C("quantitative_risk", "DOUBLE", "probability x value, when a value is given"),
        C("treatment", "VARCHAR", "reduce | avoid | transfer | accept"),
        C("treatment_options", "VARCHAR", "applicable treatments with the reason"),
        C("reason", "VARCHAR", "the evidence behind the probability"),
        C("scope_run", "VARCHAR", "scope run_id it was derived from"),
    ),
))
