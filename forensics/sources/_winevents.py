"""Windows events, whatever carried them, into ``events`` and ``logons`` rows.

EVTX files, NXLog JSON, Winlogbeat/ECS JSON and ``evtx_dump`` JSON lines each
arrive as a :class:`WinEvent` (system fields plus a flat dict of event data);
:func:`to_rows` maps one to an ``events`` row and, for the events that record
an authentication or an access with an account and an address, a ``logons``
row. Event ids are read together with their channel (Sysmon 22 is a DNS query,
LocalSessionManager 22 an RDP shell start).

Logon mapping (field names from the Windows Security audit schema):

=====================  ==========================================================
4624 / 4625            user=Target*, src=WorkstationName/IpAddress, dst=Computer
4634 / 4647            logoff of TargetLogonId
4648                   explicit credentials: src=Computer, dst=TargetServerName
4672                   special privileges for SubjectLogonId
4768 / 4769 / 4771     Kerberos at the DC: src=IpAddress; 4769 dst=service host
4776                   NTLM validation at the DC: src=Workstation
5140 / 5145            share access: src=IpAddress, service=ShareName
1149 (RCM)             RDP authentication: Param1 user, Param2 domain, Param3 address
21/22/23/24/25 (LSM)   RDP session logon, shell, logoff, disconnect, reconnect
131 (RdpCoreTS)        RDP connection accepted from ClientIP
169 (WinRM)            WinRM user authenticated (username, authenticationMechanism)
=====================  ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from forensics.sources._logio import clean, iso_us, strip_mapped, to_int

__all__ = ["WinEvent", "flatten_evtx_json", "to_rows"]


@dataclass
class WinEvent:
    """One Windows event in a carrier-neutral form."""

    ts: int | None
    computer: str | None
    channel: str | None
    provider: str | None
    event_id: int | None
    record_id: int | None = None
    user_sid: str | None = None
    level: str | None = None
    keywords: str | None = None
    message: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


# ---- EVTX JSON (the evtx crate's rendering) ---------------------------------------------


def _text(v: Any) -> Any:
    if isinstance(v, dict):
        return v.get("#text")
    return v


def _flatten_data(node: Any, out: dict[str, Any], prefix: str = "") -> None:
    """Event data as flat name -> value (named Data, unnamed Data lists, UserData)."""
    if node is None:
        return
    if not isinstance(node, dict):
        out[prefix or "Data"] = node
        return
    for k, v in node.items():
        if k == "#attributes":
            continue
        if k == "Data" and isinstance(v, list):
            for i, item in enumerate(v):
                out["Data" if i == 0 else f"Data_{i}"] = _text(item)
        elif isinstance(v, dict) and "#text" in v:
            out[k] = v["#text"]
        elif isinstance(v, dict):
            _flatten_data(v, out, k)
        else:
            out[k] = v


def flatten_evtx_json(rec: dict[str, Any]) -> WinEvent:
    """A :class:`WinEvent` from the JSON the evtx crate renders for one record.

    Raises:
        KeyError: the record has no ``Event.System`` element.
    """
    ev = rec["Event"]
    sys_ = ev["System"]
    eid = sys_.get("EventID")
    prov = (sys_.get("Provider") or {}).get("#attributes", {})
    created = (sys_.get("TimeCreated") or {}).get("#attributes", {}).get("SystemTime")
    security = sys_.get("Security") or {}
    data: dict[str, Any] = {}
    _flatten_data(ev.get("EventData"), data)
    _flatten_data(ev.get("UserData"), data)
    return WinEvent(
        ts=iso_us(created) if created else None,
        computer=clean(sys_.get("Computer")),
        channel=clean(sys_.get("Channel")),
        provider=clean(prov.get("Name") or prov.get("EventSourceName")),
        event_id=to_int(_text(eid)),
        record_id=to_int(sys_.get("EventRecordID")),
        user_sid=clean(security.get("#attributes", {}).get("UserID")) if isinstance(security, dict) else None,
        level=None if sys_.get("Level") is None else str(sys_.get("Level")),
        keywords=None if sys_.get("Keywords") is None else str(sys_.get("Keywords")),
        data=data,
    )


# ---- mapping ----------------------------------------------------------------------------

_FAMILIES = (
    ("sysmon", "microsoft-windows-sysmon"),
    ("rdp_lsm", "terminalservices-localsessionmanager"),
    ("rdp_rcm", "terminalservices-remoteconnectionmanager"),
    ("rdp_core", "remotedesktopservices-rdpcorets"),
    ("security", "microsoft-windows-security-auditing"),
    ("winrm", "microsoft-windows-winrm"),
)

_TYPES: dict[tuple[str, int], str] = {
    **{("security", k): v for k, v in {
        4624: "logon", 4625: "logon_failed", 4634: "logoff", 4647: "logoff",
        4648: "explicit_credentials", 4672: "special_privileges", 4768: "kerberos_tgt",
        4769: "kerberos_service_ticket", 4771: "kerberos_preauth_failed",
        4776: "ntlm_validation", 4688: "process_start", 4689: "process_end",
        4697: "service_install", 4698: "scheduled_task_created", 4720: "user_created",
        4728: "group_member_added", 4732: "group_member_added", 4756: "group_member_added",
        5140: "share_access", 5142: "share_added", 5145: "share_file_access",
        5156: "network_connect", 1102: "log_cleared"}.items()},
    **{("sysmon", k): v for k, v in {
        1: "process_start", 3: "network_connect", 5: "process_end", 7: "image_load",
        8: "remote_thread", 10: "process_access", 11: "file_create", 12: "registry",
        13: "registry", 14: "registry", 17: "pipe_created", 18: "pipe_connected",
        22: "dns_query", 23: "file_delete"}.items()},
    ("system", 7045): "service_install",
    ("rdp_rcm", 1149): "rdp_auth",
    **{("rdp_lsm", k): v for k, v in {
        21: "rdp_session_logon", 22: "rdp_shell_start", 23: "rdp_logoff",
        24: "rdp_disconnect", 25: "rdp_reconnect"}.items()},
    ("rdp_core", 131): "rdp_connect",
    ("winrm", 169): "winrm_auth",
}

_LOGON_ACTIONS: dict[tuple[str, int], str] = {
    ("security", 4624): "logon", ("security", 4625): "logon", ("security", 4634): "logoff",
    ("security", 4647): "logoff", ("security", 4648): "explicit_credentials",
    ("security", 4672): "special_privileges", ("security", 4768): "kerberos_tgt",
    ("security", 4769): "kerberos_service_ticket", ("security", 4771): "kerberos_preauth_failed",
    ("security", 4776): "ntlm_validation", ("security", 5140): "share_access",
    ("security", 5145): "share_access", ("rdp_rcm", 1149): "rdp_auth",
    ("rdp_lsm", 21): "rdp_session_logon", ("rdp_lsm", 22): "rdp_shell_start",
    ("rdp_lsm", 23): "rdp_logoff", ("rdp_lsm", 24): "rdp_disconnect",
    ("rdp_lsm", 25): "rdp_reconnect", ("rdp_core", 131): "rdp_connect",
    ("winrm", 169): "winrm_auth",
}

_KEYS = {
    "user": ("TargetUserName", "SubjectUserName", "User", "UserName", "username", "AccountName",
             "Param1"),
    "domain": ("TargetDomainName", "SubjectDomainName", "Domain"),
    "src_ip": ("IpAddress", "SourceIp", "SourceAddress", "ClientAddress", "Address"),
    "src_port": ("IpPort", "SourcePort"),
    "dst": ("DestinationIp", "DestAddress", "TargetServerName", "DestinationHostname"),
    "dst_port": ("DestinationPort", "DestPort"),
    "object": ("ShareName", "ServiceName", "TargetFilename", "TargetObject", "ObjectName",
               "QueryName", "TaskName", "PipeName", "ImageLoaded"),
    "process": ("NewProcessName", "Image", "ProcessName", "Application", "SourceImage"),
    "pid": ("NewProcessId", "ProcessId", "ProcessID", "SourceProcessId"),
    "parent_process": ("ParentImage", "ParentProcessName"),
    "command_line": ("CommandLine", "ImagePath"),
}


def family(channel: str | None, provider: str | None) -> str:
    """The event family (``security``, ``sysmon``, ``system``, ``rdp_*``) of a channel/provider."""
    for name in ((channel or "").lower(), (provider or "").lower()):
        for fam, needle in _FAMILIES:
            if needle in name:
                return fam
    ch = (channel or "").lower()
    if ch in ("security", "system"):
        return ch
    if (provider or "").lower() == "service control manager":
        return "system"
    return "other"


def _first(data: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        v = data.get(k)
        if v is not None and (v := clean(v)) is not None:
            return v
    return None


def _port(v: Any) -> int | None:
    p = to_int(clean(v))
    return p if p and 0 < p < 65536 else None


def split_account(user: Any, domain: Any = None) -> tuple[str | None, str | None]:
    r"""``DOMAIN\user`` or ``user@REALM`` into (user, domain); ``domain`` wins when given."""
    u = clean(user)
    d = clean(domain)
    if u is None:
        return None, d
    u = str(u)
    if "\\" in u:
        dom, _, u = u.partition("\\")
        d = d or dom
    elif "@" in u:
        u, _, dom = u.partition("@")
        d = d or dom
    return u or None, d


def _endpoint(v: Any) -> tuple[str | None, int | None]:
    """``1.2.3.4:5``, ``[1.2.3.4]:5`` or ``[fe80::1]:5`` into (address, port)."""
    s = clean(v)
    if s is None:
        return None, None
    s = str(s)
    if s.startswith("["):
        addr, _, rest = s[1:].partition("]")
        return strip_mapped(addr), _port(rest.lstrip(":"))
    if s.count(":") == 1:
        addr, _, port = s.partition(":")
        return strip_mapped(addr), _port(port)
    return strip_mapped(s), None


def _status_ok(v: Any) -> bool | None:
    n = to_int(clean(v))
    return None if n is None else n == 0


def _audit(ev: WinEvent) -> bool | None:
    """Success/failure audit from the Keywords bits (0x0020... success, 0x0010... failure)."""
    k = to_int(ev.keywords) if ev.keywords is not None else None
    if k is None:
        kw = (ev.data.get("EventType") or "").upper()
        return True if kw == "AUDIT_SUCCESS" else False if kw == "AUDIT_FAILURE" else None
    k &= 0xFFFFFFFFFFFFFFFF
    if k & 0x0020000000000000:
        return True
    if k & 0x0010000000000000:
        return False
    return None


def _logon(ev: WinEvent, fam: str, action: str) -> dict[str, Any]:
    d, eid = ev.data, ev.event_id
    row: dict[str, Any] = {"action": action, "dst_host": ev.computer}
    if fam == "security" and eid in (4624, 4625, 4634, 4647):
        row.update(
            success=eid != 4625 if eid in (4624, 4625) else None,
            user=clean(d.get("TargetUserName")), domain=clean(d.get("TargetDomainName")),
            user_sid=clean(d.get("TargetUserSid")), subject_user=clean(d.get("SubjectUserName")),
            subject_domain=clean(d.get("SubjectDomainName")),
            logon_type=to_int(clean(d.get("LogonType"))), src_host=clean(d.get("WorkstationName")),
            src_ip=strip_mapped(d.get("IpAddress")), src_port=_port(d.get("IpPort")),
            auth_package=clean(d.get("AuthenticationPackageName")),
            logon_process=clean(d.get("LogonProcessName")), process=clean(d.get("ProcessName")),
            logon_id=clean(d.get("TargetLogonId")))
        if eid == 4625:
            st, sub = clean(d.get("Status")), clean(d.get("SubStatus"))
            row["status"] = f"{st}/{sub}" if st and sub and to_int(sub) else st
    elif fam == "security" and eid == 4648:
        row.update(
            user=clean(d.get("TargetUserName")), domain=clean(d.get("TargetDomainName")),
            subject_user=clean(d.get("SubjectUserName")),
            subject_domain=clean(d.get("SubjectDomainName")), src_host=ev.computer,
            dst_host=clean(d.get("TargetServerName")), dst_ip=strip_mapped(d.get("IpAddress")),
            process=clean(d.get("ProcessName")), service=clean(d.get("TargetInfo")),
            logon_id=clean(d.get("SubjectLogonId")), success=True)
    elif fam == "security" and eid == 4672:
        row.update(user=clean(d.get("SubjectUserName")), domain=clean(d.get("SubjectDomainName")),
                   user_sid=clean(d.get("SubjectUserSid")), logon_id=clean(d.get("SubjectLogonId")),
                   success=True)
    elif fam == "security" and eid in (4768, 4769, 4771):
        user, dom = split_account(d.get("TargetUserName"), d.get("TargetDomainName"))
        svc = clean(d.get("ServiceName"))
        row.update(user=user, domain=dom, user_sid=clean(d.get("TargetSid")),
                   src_ip=strip_mapped(d.get("IpAddress")), src_port=_port(d.get("IpPort")),
                   service=svc, status=clean(d.get("Status")), auth_package="Kerberos",
                   success=False if eid == 4771 else _status_ok(d.get("Status")))
        if eid == 4769 and svc and str(svc).endswith("$"):
            row["dst_host"] = str(svc)[:-1]  # a computer account: the host the ticket is for
    elif fam == "security" and eid == 4776:
        row.update(user=clean(d.get("TargetUserName")), src_host=clean(d.get("Workstation")),
                   auth_package=clean(d.get("PackageName")), status=clean(d.get("Status")),
                   success=_status_ok(d.get("Status")))
    elif fam == "security" and eid in (5140, 5145):
        row.update(user=clean(d.get("SubjectUserName")), domain=clean(d.get("SubjectDomainName")),
                   user_sid=clean(d.get("SubjectUserSid")), src_ip=strip_mapped(d.get("IpAddress")),
                   src_port=_port(d.get("IpPort")), logon_id=clean(d.get("SubjectLogonId")),
                   service=clean(d.get("ShareName")), success=_audit(ev))
    elif fam == "rdp_rcm":
        user, dom = split_account(d.get("Param1"), d.get("Param2"))
        row.update(user=user, domain=dom, src_ip=strip_mapped(d.get("Param3")), success=True,
                   auth_package="RDP")
    elif fam == "rdp_lsm":
        user, dom = split_account(d.get("User") or d.get("Param1"))
        addr = clean(d.get("Address") or d.get("Param3"))
        row.update(user=user, domain=dom, auth_package="RDP", logon_id=clean(d.get("SessionID")),
                   src_ip=None if addr is None or str(addr).upper() == "LOCAL" else strip_mapped(addr),
                   success=True if eid in (21, 22, 25) else None)
    elif fam == "winrm":
        user, dom = split_account(d.get("username"))
        row.update(user=user, domain=dom, auth_package=clean(d.get("authenticationMechanism")),
                   success=True, service="WinRM")
    elif fam == "rdp_core":
        ip, port = _endpoint(d.get("ClientIP"))
        row.update(src_ip=ip, src_port=port, auth_package="RDP", service=clean(d.get("ConnType")))
    return row


def _message(ev: WinEvent) -> str | None:
    if ev.message:
        return ev.message
    parts = [f"{k}={v}" for k, v in ev.data.items() if clean(v) is not None
             and not isinstance(v, dict | list)]
    text = "; ".join(parts)
    return (text[:1000] + "…") if len(text) > 1000 else (text or None)


def to_rows(ev: WinEvent) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The ``events`` row and (for authentication records) the ``logons`` row of one event.

    Lineage, ``source`` and ``raw`` are left to the caller.
    """
    fam = family(ev.channel, ev.provider)
    key = (fam, ev.event_id or -1)
    d = ev.data
    row: dict[str, Any] = {
        "ts": ev.ts, "host": ev.computer, "channel": ev.channel, "provider": ev.provider,
        "event_id": ev.event_id, "type": _TYPES.get(key), "severity": ev.level,
        "record_id": ev.record_id, "message": _message(ev),
    }
    for col, keys in _KEYS.items():
        row[col] = _first(d, keys)
    row["src_ip"] = strip_mapped(row["src_ip"])
    row["dst"] = strip_mapped(row["dst"])
    row["src_port"] = _port(row["src_port"])
    row["dst_port"] = _port(row["dst_port"])
    row["pid"] = to_int(row["pid"])
    row["user"], row["domain"] = split_account(row["user"], row["domain"])
    if fam == "security" and ev.event_id == 4688:
        row["process"] = clean(d.get("NewProcessName"))
    if fam == "security" and ev.event_id == 5145 and clean(d.get("RelativeTargetName")):
        row["object"] = f"{row['object'] or ''}\\{d['RelativeTargetName']}"
    logon = None
    action = _LOGON_ACTIONS.get(key)
    if action:
        logon = _logon(ev, fam, action)
        logon.update(ts=ev.ts, host=ev.computer, event_id=ev.event_id, record_id=ev.record_id)
        for col in ("user", "domain", "src_ip", "src_port"):
            if logon.get(col) is not None:
                row[col] = logon[col]
    return row, logon
