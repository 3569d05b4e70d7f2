"""Capture-side proofs from the protocol tables (private).

These are the hooks for the SMB, DCE/RPC, RDP, SSH, NTLM and Kerberos parsers
(:mod:`forensics.tables.protocols`) and for WS-Management in ``http``. Each
function reads its table only when it holds rows, so an edge gains its
wire-level proof ("svcctl CreateServiceW from A to B") as soon as a parser
fills the table, with no change here. Until then
the capture side of an edge rests on ``sessions`` (see
:func:`forensics._lateral_obs.session_observations`).

Rows are observations in the shape of :data:`forensics._lateral_obs.COLS`,
``side="capture"``, with their own lineage (table plus evidence, member and
record offset) and the session ``uid`` they were carried in.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pandas as pd

from forensics import _lateral_rules as R
from forensics._lateral_sql import log_row_key, query

if TYPE_CHECKING:
    from forensics.case import Case

HOOK_TABLES = ("smb_mapping", "smb_files", "dce_rpc", "rdp", "ssh", "ntlm", "kerberos", "http")
_CONN = "ts, uid, orig_h, orig_p, resp_h, resp_p, evidence_id, member, record_offset, source"

# (endpoint regex, operation regex or None) -> technique; first match wins.
DCE_RPC_RULES: list[tuple[str, str | None, str]] = [
    (r"svcctl", r"createservice|startservice|changeserviceconfig", "service_install"),
    (r"svcctl", None, "service_control"),
    (r"iwbemservices|iwbemlevel1login", None, "wmi"),
    (r"itaskschedulerservice|atsvc|sasec", r"register|jobadd|setinstance|run", "scheduled_task"),
    (r"winreg", r"setvalue|createkey|save", "remote_registry"),
    (r"spoolss", r"findfirstprinterchangenotification|openprinter", "printerbug"),
    (r"isystemactivator|iremotescmactivator|iobjectexporter|iremunknown", None, "rpc"),
]


def _row(r: Any, table: str, technique: str, role: str, detail: str, **kw: Any) -> dict[str, Any]:
    return {"ts": r.ts, "ts_end": r.ts, "role": role, "technique": technique,
            "level": kw.pop("level", R.technique_info(technique)[3]), "side": "capture", "src_raw": r.orig_h,
            "dst_raw": r.resp_h, "src_port": r.orig_p, "dst_port": r.resp_p, "account": kw.pop("account",
                                                                                               None),
            "domain": kw.pop("domain", None), "success": kw.pop("success", None), "process": None,
            "hint": None,
            "table": table, "key": log_row_key(table, r), "detail": detail, "uid": r.uid,
            "link": f"{r.orig_h}:{r.orig_p}", "evidence_id": r.evidence_id, "log_host": None,
            "reader": r.source, "requires_src": False, **kw}


def smb_observations(case: Case) -> list[dict[str, Any]]:
    """Tree connects to admin shares, pipe opens and file writes on them (smb_mapping, smb_files)."""
    out: list[dict[str, Any]] = []
    m = query(case, f"SELECT {_CONN}, path, status FROM smb_mapping", [], ("smb_mapping",))
    for r in m.itertuples(index=False):
        share = str(r.path or "").rstrip("\\").rsplit("\\", 1)[-1].upper()
        if share == "ADMIN$" or re.fullmatch(r"[A-Z]\$", share):
            ok = None if r.status is None or pd.isna(r.status) else str(r.status).upper() == "SUCCESS"
            out.append(_row(r, "smb_mapping", "smb_admin_share", "support",
                            f"smb_mapping {r.path} {r.status}",
                            success=ok))
    f = query(case, f"SELECT {_CONN}, action, path, name, named_pipe, data_len FROM smb_files", [],
              ("smb_files",))
    for r in f.itertuples(index=False):
        name = str(r.name or "")
        share = str(r.path or "").rstrip("\\").rsplit("\\", 1)[-1].upper()
        pipe = R.basename(name)
        if bool(r.named_pipe) or share == "IPC$":
            if pipe in R.PIPES:
                out.append(_row(r, "smb_files", R.PIPES[pipe], "anchor", f"smb_files pipe {pipe} {r.action}"))
            elif R.PSEXEC_NAMES.search(pipe):
                out.append(_row(r, "smb_files", "psexec", "anchor", f"smb_files pipe {pipe}"))
        elif str(r.action).upper().endswith("WRITE") and (share == "ADMIN$" or re.fullmatch(r"[A-Z]\$",
                                                                                            share)):
            tech = "psexec" if R.PSEXEC_NAMES.search(name) or R.admin_root_exe(share, name) else "smb_copy"
            out.append(_row(r, "smb_files", tech, "anchor",
                            f"smb_files write {r.path}\\{name} ({r.data_len} B)",
                            level="logon"))
    return out


def dce_rpc_observations(case: Case) -> list[dict[str, Any]]:
    """DCE/RPC calls that are remote execution or administration (svcctl, WMI, tasks, winreg)."""
    out: list[dict[str, Any]] = []
    d = query(case, f"SELECT {_CONN}, endpoint, operation, named_pipe FROM dce_rpc", [], ("dce_rpc",))
    for r in d.itertuples(index=False):
        ep, op = str(r.endpoint or "").lower(), str(r.operation or "").lower()
        for ep_re, op_re, tech in DCE_RPC_RULES:
            if re.search(ep_re, ep) and (op_re is None or re.search(op_re, op)):
                role = "support" if tech == "rpc" else "anchor"
                out.append(_row(r, "dce_rpc", tech, role, f"dce_rpc {r.endpoint}::{r.operation}"))
                break
    return out


def auth_observations(case: Case) -> list[dict[str, Any]]:
    """Accounts on the wire: RDP cookies, SSH outcomes, NTLM and Kerberos service tickets."""
    out: list[dict[str, Any]] = []
    for r in query(case, f"SELECT {_CONN}, cookie, result FROM rdp", [], ("rdp",)).itertuples(index=False):
        out.append(_row(r, "rdp", "rdp", "support", f"rdp cookie {r.cookie} {r.result or ''}",
                        level="contact",
                        account=R.norm_account(r.cookie)))
    for r in query(case, f"SELECT {_CONN}, auth_success, client FROM ssh", [], ("ssh",
                                                                                )).itertuples(index=False):
        ok = None if pd.isna(r.auth_success) else bool(r.auth_success)
        out.append(_row(r, "ssh", "ssh", "support", f"ssh {r.client or ''} auth_success={ok}",
                        level="contact",
                        success=ok))
    n = query(case, f"SELECT {_CONN}, username, domainname, success FROM ntlm", [], ("ntlm",))
    for r in n.itertuples(index=False):
        ok = None if pd.isna(r.success) else bool(r.success)
        acct = R.norm_account(r.username)
        if acct:
            out.append(_row(r, "ntlm", "network_logon", "support", f"ntlm {r.domainname}\\{r.username} {ok}",
                            account=acct, domain=r.domainname, success=ok, level="logon"))
    k = query(case,
              f"SELECT {_CONN}, request_type, client, service, success FROM kerberos "
              "WHERE request_type = 'TGS'",
              [], ("kerberos",))
    for r in k.itertuples(index=False):
        host = R.spn_host(r.service)
        acct = R.norm_account(str(r.client or "").split("/", 1)[0])
        if host and acct:
            row = _row(r, "kerberos", "kerberos_service_ticket", "support",
                       f"kerberos TGS {r.client} {r.service}",
                       account=acct, success=None if pd.isna(r.success) else bool(r.success))
            row["dst_raw"], row["dst_port"] = host, None  # the ticket names the target; the KDC is resp_h
            out.append(row)
    return out


def wsman_observations(case: Case) -> list[dict[str, Any]]:
    """WS-Management requests (WinRM, PowerShell remoting) from ``http`` rows of captured sessions."""
    out: list[dict[str, Any]] = []
    h = query(case, f"SELECT {_CONN}, method, uri, status_code, username FROM http "
                    "WHERE uid IS NOT NULL AND uri ILIKE '%/wsman%'", [], ("http",))
    for r in h.itertuples(index=False):
        ok = None if pd.isna(r.status_code) else int(r.status_code) < 400
        out.append(_row(r, "http", "winrm", "support", f"http {r.method} {r.uri} {r.status_code}",
                        level="contact", success=ok, account=R.norm_account(r.username)))
    return out


def protocol_observations(case: Case) -> list[dict[str, Any]]:
    """All capture-side observations from the protocol tables (empty while their parsers are pending)."""
    return (smb_observations(case) + dce_rpc_observations(case) + auth_observations(case)
            + wsman_observations(case))
