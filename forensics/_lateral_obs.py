r"""Observations: every record that says something about one host reaching another (private).

Each observation is one row of one table, read into a common shape:

- ``anchor``: evidence on the target that something ran or was done there
  (7045 service, a WmiPrvSE child, 4624 type 10, an sshd login, a write to
  ADMIN$, a svcctl CreateService call on the wire, ...);
- ``support``: evidence that a host connected or logged on to the target
  (4624 type 3, 4769, inbound Sysmon 3, a captured session, smb_mapping, ...);
- ``source``: evidence on the source that names the target (4648, ``wmic
  /node:``, ``sc \\\\host``, outbound Sysmon 3).

:mod:`forensics.lateral` fuses them into edges. Capture-side hooks read the
protocol tables (``smb_mapping``, ``smb_files``, ``dce_rpc``, ``rdp``, ``ssh``,
``ntlm``, ``kerberos``) whenever they hold rows; until their parsers land, the
capture side of an edge is proven by sessions alone (ports, bytes, direction).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pandas as pd

from forensics import _lateral_rules as R
from forensics._lateral_sql import jf, log_row_key, oriented_sysmon, query, row_key
from forensics.hostmap import canonical_host, is_internal

if TYPE_CHECKING:
    from forensics.case import Case

COLS = ["ts", "ts_end", "role", "technique", "level", "side", "src_raw", "dst_raw", "src_port", "dst_port",
        "account", "domain", "success", "process", "hint", "table", "key", "detail", "uid", "link",
        "evidence_id", "log_host", "reader", "requires_src"]
_LOG = "evidence_id, member, record_offset, source"


def _obs(r: Any, table: str, **kw: Any) -> dict[str, Any]:
    """One observation from a log-table row ``r`` (lineage and provenance filled in)."""
    tech = kw.get("technique")
    d = {"ts": r.ts, "ts_end": r.ts, "side": "host_log", "table": table, "key": log_row_key(table, r),
         "evidence_id": r.evidence_id, "log_host": getattr(r, "host", None), "reader": getattr(r, "source",
                                                                                               None),
         "level": R.technique_info(tech)[3] if tech else "contact", "requires_src": False}
    d.update(kw)
    return d


def _int(v: Any) -> int | None:
    try:
        return None if v is None or pd.isna(v) else int(v)
    except (TypeError, ValueError):
        return None


def logon_observations(case: Case) -> list[dict[str, Any]]:
    """Observations from the ``logons`` table (4624/4625/4648/4769, RDP, sshd, WinRM)."""
    df = query(case, f"""
        SELECT ts, host, event_id, action, success, logon_type, user, domain, src_host, src_ip, src_port,
               dst_host, auth_package, logon_process, process, service, {_LOG}
        FROM logons WHERE action IN ('logon', 'explicit_credentials', 'kerberos_service_ticket', 'rdp_auth',
              'rdp_connect', 'rdp_session_logon', 'rdp_shell_start', 'rdp_reconnect', 'ssh', 'winrm_auth')
        """, [], ("logons",))
    out: list[dict[str, Any]] = []
    rdp_level = {"rdp_session_logon": "execution", "rdp_shell_start": "execution",
                 "rdp_reconnect": "execution",
                 "rdp_auth": "logon", "rdp_connect": "contact"}
    for r in df.itertuples(index=False):
        acct = R.norm_account(r.user)
        ok = None if pd.isna(r.success) else bool(r.success)
        src = r.src_ip if canonical_host(r.src_ip) else r.src_host
        common = {"account": acct, "domain": r.domain, "success": ok, "src_port": _int(r.src_port),
                  "process": r.process}
        link = f"{r.src_ip}:{int(r.src_port)}" if _int(r.src_port) and isinstance(r.src_ip, str) else None
        if r.action == "logon":
            lt = _int(r.logon_type)
            if lt in (3, 8) and acct and canonical_host(src):
                out.append(_obs(r, "logons", role="support", technique="network_logon", src_raw=src,
                                dst_raw=r.host, link=link, detail=f"{r.event_id} type {lt} {acct} from {src}",
                                hint=None, **common))
            elif lt == 10 and canonical_host(src):
                out.append(_obs(r, "logons", role="anchor", technique="rdp", src_raw=src, dst_raw=r.host,
                                level="execution" if ok else "logon", link=link,
                                detail=f"{r.event_id} type 10 (RemoteInteractive) {acct} from {src}",
                                **common))
            elif lt == 9 and "seclogo" in str(r.logon_process).lower():
                out.append(_obs(r, "logons", role="anchor", technique="pass_the_hash", src_raw=r.host,
                                dst_raw=None, detail=f"4624 type 9 (NewCredentials, seclogo) {acct}: "
                                "pass-the-hash or runas /netonly", **common))
        elif r.action == "explicit_credentials":
            tgt = r.dst_host if canonical_host(r.dst_host) else R.spn_host(r.service)
            out.append(_obs(r, "logons", role="source", technique="explicit_credentials", src_raw=r.host,
                            dst_raw=tgt, hint=R.hint_from_spn(r.service, r.process),
                            detail=f"4648 {acct} to {tgt} ({r.service or '-'}) by {R.basename(r.process)}",
                            **common))
        elif r.action == "kerberos_service_ticket":
            tgt = R.spn_host(r.service)
            if tgt and acct and canonical_host(src):
                out.append(_obs(r, "logons", role="support", technique="kerberos_service_ticket", src_raw=src,
                                dst_raw=tgt, detail=f"4769 {acct} ticket for {r.service} from {src}",
                                **common))
        elif r.action in rdp_level:
            if canonical_host(src):
                out.append(_obs(r, "logons", role="anchor", technique="rdp", src_raw=src, dst_raw=r.host,
                                level=rdp_level[r.action], link=link,
                                detail=f"{r.event_id} {r.action} {acct or ''} from {src}", **common))
        elif r.action == "ssh":
            if canonical_host(src):
                out.append(_obs(r, "logons", role="anchor", technique="ssh", src_raw=src, dst_raw=r.host,
                                level="execution" if ok else "logon", link=link,
                                detail=f"sshd {'accepted' if ok else 'failed'} {r.user} from {src}",
                                **common))
        elif r.action == "winrm_auth":
            out.append(_obs(r, "logons", role="anchor", technique="winrm", src_raw=None, dst_raw=r.host,
                            level="logon", detail=f"WinRM {r.event_id} {acct} authenticated", **common))
    return out


_VEHICLE_RE = "(wmiprvse|wsmprovhost|winrshost|mmc|w3wp|httpd|php-cgi|tomcat|sqlservr|services)\\.exe$"
_CMD_RE = (r"(?i)(wmic|psexec|\bsc(\.exe)?\s+\\\\|schtasks|\bat(\.exe)?\s+\\\\|mstsc|winrs|pssession|"
           r"invoke-command|ssh(\.exe)?\s|remoteregistry|-embedding)")


def process_observations(case: Case) -> list[dict[str, Any]]:
    """Observations from process starts (Sysmon 1, 4688): remote-execution children and source commands.

    A 4688 without a parent image (Windows before 10) gets its parent from the
    creator process id of an earlier 4688 on the same host.
    """
    df = query(case, f"""
        WITH p AS (
            SELECT ts, host, event_id, user, domain, process, parent_process, command_line, {_LOG},
                   {jf('ProcessId')} AS cpid, {jf('NewProcessId')} AS npid
            FROM events WHERE (event_id = 1 AND provider ILIKE '%sysmon%') OR event_id = 4688),
        veh AS (SELECT host AS vhost, npid AS vpid, process AS vproc, ts AS vts FROM p
                WHERE event_id = 4688 AND regexp_matches(lower(process), '{_VEHICLE_RE}'))
        SELECT p.* EXCLUDE (parent_process), coalesce(p.parent_process, v.vproc) AS parent_process
        FROM p ASOF LEFT JOIN veh v ON p.host = v.vhost AND p.cpid = v.vpid AND p.ts >= v.vts
        WHERE regexp_matches(lower(coalesce(p.parent_process, v.vproc, '')), '{_VEHICLE_RE}')
           OR regexp_matches(lower(coalesce(p.process, '')), '(wsmprovhost|winrshost|mshta|mmc)\\.exe$')
           OR regexp_matches(coalesce(p.command_line, ''), '{_CMD_RE}')
        """, [], ("events",))
    out: list[dict[str, Any]] = []
    for r in df.itertuples(index=False):
        exe, parent = R.basename(r.process), R.basename(r.parent_process)
        cmd = r.command_line if isinstance(r.command_line, str) else ""
        base = {"account": R.norm_account(r.user), "domain": r.domain, "success": True, "process": r.process,
                "src_raw": None, "dst_raw": r.host}
        tech = None
        if parent in R.PARENT_VEHICLES and not (parent == "wmiprvse.exe" and exe == "wmiprvse.exe"):
            tech = R.PARENT_VEHICLES[parent]
        elif exe in R.SELF_VEHICLES:
            tech = R.SELF_VEHICLES[exe]
        elif exe in R.DCOM_EMBEDDING and "-embedding" in cmd.lower():
            tech = "dcom"
        elif parent == "services.exe" and R.service_child(r.process):
            tech = "psexec"
        elif re.search(r"-s\s+RemoteRegistry", cmd, re.I):
            tech = "remote_registry"
        if tech:
            out.append(_obs(r, "events", role="anchor", technique=tech,
                            detail=f"{r.event_id} {parent or '?'} -> {exe}: {cmd[:160]}", **base))
            continue
        sc = R.source_command(cmd)
        if sc:
            # the process runs as the local user, not as the account used on the target
            out.append(_obs(r, "events", role="source", technique=sc[0], hint=R.family_of(sc[0]),
                            **{**base, "src_raw": r.host, "dst_raw": sc[1], "level": "contact",
                               "account": None},
                            detail=f"{r.event_id} {exe} ({r.user}): {cmd[:160]}"))
    return out


def service_observations(case: Case) -> list[dict[str, Any]]:
    """Service installs (7045, 4697) that look like remote execution (PsExec and kin)."""
    df = query(case, f"""
        SELECT ts, host, event_id, user, domain, object, command_line, {_LOG},
               coalesce(command_line, {jf('ImagePath')}, {jf('ServiceFileName')}) AS image,
               coalesce(object, {jf('ServiceName')}) AS name
        FROM events WHERE event_id IN (7045, 4697)""", [], ("events",))
    out: list[dict[str, Any]] = []
    for r in df.itertuples(index=False):
        tech = R.service_technique(r.name, r.image)
        if tech:
            out.append(_obs(r, "events", role="anchor", technique=tech, src_raw=None, dst_raw=r.host,
                            account=R.norm_account(r.user), domain=r.domain, success=True, process=None,
                            detail=f"{r.event_id} service {r.name} ({r.image})"))
    return out



# The share at the end of an object name (\\host\C$\dir): the match lies on the last line
# (``.*`` stops at a newline, ``$`` is the end or a final newline), so only that line is
# searched; searching all of a name with newlines in it retried every share from each one.
_SHARE_TAIL = re.compile(r"\\(admin\$|ipc\$|[a-z]\$)(?:\\+(.*))?$", re.I)


def _last_line(text: str) -> str:
    """The line ``$`` can end a match on: the last one, or the one before a final newline."""
    return (text[:-1] if text.endswith("\n") else text).rsplit("\n", 1)[-1]


def share_observations(case: Case) -> list[dict[str, Any]]:
    """Share access (5140, 5145) to admin shares and to interesting IPC$ pipes."""
    df = query(case, f"""
        SELECT ts, host, event_id, user, domain, src_ip, src_port, object, {_LOG},
               {jf('AccessMask')} AS mask, {jf('AccessList')} AS access, {jf('ShareName')} AS share,
               {jf('RelativeTargetName')} AS rel
        FROM events WHERE event_id IN (5140, 5145)
          AND regexp_matches(coalesce(object, ''), '(?i)\\\\(admin\\$|ipc\\$|[a-z]\\$)')""", [], ("events",))
    out: list[dict[str, Any]] = []
    for r in df.itertuples(index=False):
        obj = str(r.object or "")
        m = _SHARE_TAIL.search(_last_line(obj))
        share = (m.group(1) if m else str(r.share or "").rsplit("\\", 1)[-1]).upper()
        rel = (r.rel if isinstance(r.rel, str) and r.rel not in ("",
                                                                 "\\") else (m.group(2) if m else "")) or ""
        rel = rel.strip("\\")
        tech, role = None, "anchor"
        if share == "IPC$":
            pipe = R.basename(rel)
            if pipe in R.PIPES:
                tech = R.PIPES[pipe]
            elif pipe and R.PSEXEC_NAMES.search(pipe):
                tech = "psexec"
            elif pipe and pipe not in R.BENIGN_PIPES:
                tech = "smb_named_pipe"
        elif rel and R.access_writes(r.mask, r.access):
            tech = "psexec" if R.PSEXEC_NAMES.search(rel) or R.admin_root_exe(share, rel) else "smb_copy"
        else:
            tech, role = "smb_admin_share", "support"
        if tech is None:
            continue
        level = "logon" if tech in ("psexec", "smb_copy") else R.technique_info(tech)[3]
        out.append(_obs(r, "events", role=role, technique=tech, level=level, src_raw=r.src_ip, dst_raw=r.host,
                        src_port=_int(r.src_port), account=R.norm_account(r.user), domain=r.domain,
                        success=True, process=None,
                        link=f"{r.src_ip}:{int(r.src_port)}" if _int(r.src_port) else None,
                        detail=f"{r.event_id} {share}\\{rel} by {r.user} from {r.src_ip}"))
    return out


def sysmon_observations(case: Case) -> list[dict[str, Any]]:
    """Sysmon 3 connections on admin ports (both ends), 7 remote image loads, 11 files, 18 pipes."""
    out: list[dict[str, Any]] = []
    df = oriented_sysmon(case)
    for r in df.itertuples(index=False):
        if canonical_host(r.client) is None or canonical_host(r.server) is None:
            continue
        port = _int(r.server_port)
        exe = R.basename(r.process)
        common = {"account": R.norm_account(r.user), "domain": None, "success": None, "process": r.process,
                  "src_port": _int(r.client_port), "dst_port": port,
                  "link": f"{r.client}:{_int(r.client_port)}"}
        if exe in R.DCOM_EMBEDDING:  # the DCOM-launched process talks to its remote client (either way)
            remote = r.server if r.local_is_client else r.client
            out.append(_obs(r, "events", role="support", technique="dcom", src_raw=remote, dst_raw=r.host,
                            detail=f"Sysmon 3 {exe} on {r.host} <-> {remote} "
                                   f"({r.client} -> {r.server}:{port})",
                            **{**common, "dst_port": None}))
        elif port in R.ADMIN_PORTS:
            tech = R.PORT_TECHNIQUE.get(port, "smb")
            if r.local_is_client:
                out.append(_obs(r, "events", role="source", technique=tech, src_raw=r.host, dst_raw=r.server,
                                hint=R.family_of(tech),
                                detail=f"Sysmon 3 {exe} {r.client} -> {r.server}:{port}",
                                **{**common, "account": None}))
            else:
                out.append(_obs(r, "events", role="support", technique=tech, src_raw=r.client, dst_raw=r.host,
                                detail=f"Sysmon 3 inbound {r.client} -> {r.server}:{port} ({exe})", **common))
    misc = query(case, f"""
        SELECT ts, host, event_id, user, process, object, {_LOG} FROM events
        WHERE provider ILIKE '%sysmon%' AND ((event_id = 7 AND object LIKE '\\\\%')
           OR (event_id = 11 AND (lower(process) = 'system' OR lower(process) LIKE '%\\mstsc.exe'))
           OR (event_id IN (17, 18) AND lower(process) = 'system'))""", [], ("events",))
    for r in misc.itertuples(index=False):
        obj = str(r.object or "")
        kw: dict[str, Any] = {"account": None, "domain": None, "success": True, "process": r.process,
                              "dst_raw": r.host, "src_raw": None}
        if r.event_id == 7:
            unc = obj.lstrip("\\").split("\\", 1)[0]
            out.append(_obs(r, "events", role="anchor", technique="remote_image_load",
                            **{**kw, "src_raw": unc},
                            detail=f"Sysmon 7 {R.basename(r.process)} loaded {obj}"))
        elif r.event_id == 11 and R.basename(r.process) == "mstsc.exe":
            if re.search(r"\\start menu\\programs\\startup\\", obj, re.I):
                out.append(_obs(r, "events", role="anchor", technique="rdp", level="logon", **kw,
                                detail=f"Sysmon 11 mstsc.exe wrote {obj} "
                                       "(RDP drive redirection, \\\\tsclient)"))
        elif r.event_id == 11:
            if re.search(r"\.(exe|dll|ps1|bat|cmd|vbs|js|hta|scr)$", obj, re.I):
                out.append(_obs(r, "events", role="anchor", technique="smb_copy", **kw,
                                detail=f"Sysmon 11 System (SMB server) wrote {obj}"))
        else:
            pipe = obj.strip("\\").split("\\")[-1].lower()
            if pipe in R.PIPES:
                out.append(_obs(r, "events", role="support", technique=R.PIPES[pipe], **kw,
                                detail=f"Sysmon {r.event_id} pipe \\{pipe} over SMB"))
            elif R.PSEXEC_NAMES.search(pipe) or pipe not in R.BENIGN_PIPES:
                out.append(_obs(r, "events", role="anchor",
                                technique="psexec" if R.PSEXEC_NAMES.search(pipe) else "smb_named_pipe", **kw,
                                detail=f"Sysmon {r.event_id} pipe \\{pipe} opened over SMB"))
    return out


def app_log_observations(case: Case) -> list[dict[str, Any]]:
    """WinRM (91, 6), MSSQL (18454, 33205, 15457) and scheduled tasks (4698, TaskScheduler 106)."""
    df = query(case, f"""
        SELECT ts, host, event_id, provider, channel, user, domain, message, CAST(raw AS VARCHAR) AS rawtext,
               {_LOG}
        FROM events WHERE (channel ILIKE '%WinRM%' AND event_id IN (6, 91))
           OR (provider ILIKE 'MSSQL%' AND event_id IN (18453, 18454, 33205, 15457))
           OR event_id = 4698 OR (channel ILIKE '%TaskScheduler%' AND event_id = 106)""", [], ("events",))
    out: list[dict[str, Any]] = []
    for r in df.itertuples(index=False):
        text = f"{r.message or ''} {r.rawtext or ''}"
        kw: dict[str, Any] = {"account": R.norm_account(r.user), "domain": r.domain, "success": True,
                              "process": None, "src_raw": None, "dst_raw": r.host}
        prov, ch = str(r.provider or ""), str(r.channel or "")
        if "winrm" in ch.lower() and r.event_id == 91:
            out.append(_obs(r, "events", role="anchor", technique="winrm", **kw,
                            detail="WinRM 91 shell created"))
        elif "winrm" in ch.lower():
            m = re.search(r"connection string is:?\s*(?:https?://)?([^\s/:]+)", text, re.I)
            if m:
                out.append(_obs(r, "events", role="source", technique="winrm", hint="winrm", level="contact",
                                **{**kw, "src_raw": r.host, "dst_raw": m.group(1)},
                                detail=f"WinRM 6 session to {m.group(1)}"))
        elif prov.upper().startswith("MSSQL") and r.event_id in (18453, 18454):
            m = re.search(r"\[CLIENT:\s*([^\]\s]+)\s*\]", text)
            if m:
                out.append(_obs(r, "events", role="support", technique="mssql", level="logon",
                                **{**kw, "src_raw": m.group(1)},
                                detail=f"MSSQL {r.event_id} login from {m.group(1)}"))
        elif prov.upper().startswith("MSSQL"):
            if "xp_cmdshell" in text.lower():
                out.append(_obs(r, "events", role="anchor", technique="mssql",
                                level="execution" if r.event_id == 33205 else "logon", **kw,
                                detail=f"MSSQL {r.event_id} xp_cmdshell"))
        else:
            out.append(_obs(r, "events", role="anchor", technique="scheduled_task", requires_src=True, **kw,
                            detail=f"{r.event_id} scheduled task registered"))
    return out


def session_observations(case: Case, nets: Iterable[Any]) -> list[dict[str, Any]]:
    """Captured TCP sessions between internal hosts on admin ports, or dynamic RPC ports after a 135 bind."""
    ports = ", ".join(str(p) for p in sorted(R.ADMIN_PORTS))
    df = query(case, f"""
        SELECT s.uid, s.ts, s.ts_end, s.orig_h, s.orig_p, s.resp_h, s.resp_p, s.orig_bytes, s.resp_bytes,
               s.conn_state, s.evidence_id, s.source
        FROM sessions s
        WHERE s.proto = 'tcp' AND coalesce(s.orig_bytes, 0) > 0 AND coalesce(s.resp_bytes, 0) > 0
          AND (s.resp_p IN ({ports}) OR (s.resp_p >= 1024 AND EXISTS (
                SELECT 1 FROM sessions b WHERE b.orig_h = s.orig_h AND b.resp_h = s.resp_h AND b.resp_p = 135
                  AND b.ts BETWEEN s.ts - INTERVAL 30 SECOND AND s.ts + INTERVAL 1 SECOND)))""",
               [], ("sessions",))
    nets = list(nets)
    out: list[dict[str, Any]] = []
    for r in df.itertuples(index=False):
        if not (is_internal(r.orig_h, nets) and is_internal(r.resp_h, nets)):
            continue
        port = int(r.resp_p)
        tech = R.PORT_TECHNIQUE.get(port, "rpc")
        out.append({"ts": r.ts, "ts_end": r.ts_end if pd.notna(r.ts_end) else r.ts, "role": "support",
                    "technique": tech, "level": "contact", "side": "capture", "src_raw": r.orig_h,
                    "dst_raw": r.resp_h, "src_port": int(r.orig_p), "dst_port": port, "account": None,
                    "domain": None, "success": None, "process": None, "hint": None, "table": "sessions",
                    "key": row_key("sessions", uid=r.uid),
                    "detail": f"capture {r.orig_h}:{r.orig_p} -> {r.resp_h}:{port} {r.conn_state} "
                              f"{int(r.orig_bytes)}/{int(r.resp_bytes)} B",
                    "uid": r.uid, "link": f"{r.orig_h}:{int(r.orig_p)}", "evidence_id": r.evidence_id,
                    "log_host": None, "reader": r.source, "requires_src": False})
    return out


def collect(case: Case, nets: Iterable[Any]) -> pd.DataFrame:
    """Every observation of the case, in one frame (columns :data:`COLS`), time-ordered."""
    from forensics._lateral_hooks import protocol_observations

    rows: list[dict[str, Any]] = []
    for fn in (logon_observations, process_observations, service_observations, share_observations,
               sysmon_observations, app_log_observations):
        rows += fn(case)
    nets = list(nets)
    rows += session_observations(case, nets)
    rows += protocol_observations(case)
    df = pd.DataFrame(rows, columns=COLS)
    if len(df):
        df["ts"] = pd.to_datetime(df["ts"], utc=True)
        df["ts_end"] = pd.to_datetime(df["ts_end"], utc=True).fillna(df["ts"])
        df = df[df["ts"].notna()].sort_values(["ts", "table", "key"], kind="stable").reset_index(drop=True)
    return df
