"""sshd, sudo and su messages into event fields and ``logons`` rows.

Message shapes are OpenSSH's ``auth.c``/``auth2.c`` log lines (``Accepted``,
``Failed``, ``Invalid user``, ``message repeated``), sudo's
``user : TTY=... ; PWD=... ; USER=... ; COMMAND=...`` audit line, util-linux
and shadow ``su`` lines, and pam_unix lines. :func:`auth_rows` fills the
``type``, ``user``, ``src_ip``... of the syslog ``events`` row in place and
returns a ``logons`` row for the lines that record an authentication.
"""

from __future__ import annotations

import re
from typing import Any

from forensics.sources._logio import strip_mapped

_ADDR = r"(?P<ip>[0-9A-Fa-f:.]+?)(?:%\S+)?"
SSH_AUTH = re.compile(
    rf"^(?P<verdict>Accepted|Failed|Postponed|Partial) (?P<method>\S+) for (?P<invalid>invalid user )?"
    rf"(?P<user>.*?) from {_ADDR} port (?P<port>\d+)(?: (?P<proto>ssh2?))?(?:: (?P<key>.*))?$")
SSH_INVALID = re.compile(rf"^Invalid user (?P<user>.*?) from {_ADDR}(?: port (?P<port>\d+))?\s*$")
SSH_REPEAT = re.compile(r"^message repeated (?P<n>\d+) times: \[ ?(?P<msg>.*?) ?\]$")
SSH_FROM = re.compile(rf"(?:from|by|rhost=|\[) ?{_ADDR}(?:\]| port (?P<port>\d+)|\s|;|:|$)")
PAM = re.compile(r"^pam_unix\((?P<svc>[^:)]+):(?P<kind>\w+)\): (?P<what>.*)$")
PAM_SESSION = re.compile(r"^session (?P<state>opened|closed) for user (?P<user>[^\s(]+)")
PAM_FAIL_USER = re.compile(r"\buser=(?P<user>\S+)")
PAM_RHOST = re.compile(r"\brhost=(?P<rhost>\S+)")
PAM_LOGNAME = re.compile(r"\bruser=(?P<ruser>\S+)")
SUDO = re.compile(r"^\s*(?P<caller>\S+) : (?P<fields>.*)$")
SU_OK = re.compile(r"^(?:Successful su for (?P<to1>\S+) by (?P<by1>\S+)|\(to (?P<to2>\S+)\) "
                   r"(?P<by2>\S+) on (?P<tty>\S+)|\+ (?P<tty3>\S+) (?P<by3>[^:\s]+):(?P<to3>\S+))$")
SU_FAIL = re.compile(r"^(?:FAILED su for (?P<to1>\S+) by (?P<by1>\S+)|- (?P<tty>\S+) "
                     r"(?P<by2>[^:\s]+):(?P<to2>\S+)|FAILED SU \(to (?P<to3>\S+)\) (?P<by3>\S+) "
                     r"on (?P<tty3>\S+))$")
_IPLIKE = re.compile(r"^[0-9A-Fa-f:.]*[0-9A-Fa-f]$")


def _ip(v: str | None) -> str | None:
    if not v or not _IPLIKE.match(v) or ("." not in v and ":" not in v):
        return None
    return strip_mapped(v)


def _logon(event: dict[str, Any], **kw: Any) -> dict[str, Any]:
    row = {k: event.get(k) for k in ("ts", "host", "source", "line", "record_offset", "member")}
    row["dst_host"] = event.get("host")
    row.update(kw)
    return row


def _ssh(msg: str, event: dict[str, Any]) -> dict[str, Any] | None:
    repeated = SSH_REPEAT.match(msg)
    status = None
    if repeated:
        msg = repeated["msg"]
        status = f"repeated {repeated['n']} times"
    m = SSH_AUTH.match(msg)
    if m and m["verdict"] in ("Accepted", "Failed"):
        ok = m["verdict"] == "Accepted"
        event.update(type="ssh_accepted" if ok else "ssh_failed", user=m["user"],
                     src_ip=_ip(m["ip"]), src_port=int(m["port"]))
        if m["invalid"]:
            status = "invalid user" + (f"; {status}" if status else "")
        return _logon(event, action="ssh", success=ok, user=m["user"], src_ip=event["src_ip"],
                      src_port=event["src_port"], auth_package=m["method"], status=status,
                      service="sshd", process="sshd")
    m = SSH_INVALID.match(msg)
    if m:
        event.update(type="ssh_invalid_user", user=m["user"], src_ip=_ip(m["ip"]),
                     src_port=int(m["port"]) if m["port"] else None)
        return _logon(event, action="ssh", success=False, user=m["user"], src_ip=event["src_ip"],
                      src_port=event["src_port"], status="invalid user", service="sshd",
                      process="sshd")
    if msg.startswith(("Connection closed by", "Disconnected from", "Received disconnect from",
                       "Connection reset by")):
        event["type"] = "ssh_disconnect"
    elif msg.startswith("reverse mapping checking"):
        event["type"] = "ssh_reverse_mapping_failed"
    elif msg.startswith("Did not receive identification string"):
        event["type"] = "ssh_no_identification"
    f = SSH_FROM.search(msg)
    if f and event.get("src_ip") is None:
        event["src_ip"] = _ip(f["ip"])
        if f["port"]:
            event["src_port"] = int(f["port"])
    return None


def _pam(msg: str, event: dict[str, Any]) -> dict[str, Any] | None:
    m = PAM.match(msg)
    if not m:
        return None
    svc, what = m["svc"], m["what"]
    s = PAM_SESSION.match(what)
    if s:
        event.update(type=f"session_{s['state']}", user=s["user"], object=svc)
        return None
    if what.startswith("authentication failure"):
        u = PAM_FAIL_USER.search(what)
        r = PAM_RHOST.search(what)
        event.update(type="auth_failure", user=u["user"] if u else None, object=svc,
                     src_ip=_ip(r["rhost"]) if r else None)
        if svc.startswith("su"):
            caller = PAM_LOGNAME.search(what)
            return _logon(event, action="su", success=False, user=event["user"],
                          subject_user=caller["ruser"] if caller else None, service=svc,
                          process="su")
    return None


def _sudo(msg: str, event: dict[str, Any]) -> dict[str, Any] | None:
    m = SUDO.match(msg)
    if not m or ("COMMAND=" not in m["fields"] and "USER=" not in m["fields"]):
        return None
    parts = [p.strip() for p in m["fields"].split(" ; ")]
    fields = dict(p.split("=", 1) for p in parts if "=" in p)
    problems = [p for p in parts if "=" not in p]
    ok = not problems
    event.update(type="sudo" if ok else "sudo_failed", user=m["caller"],
                 command_line=fields.get("COMMAND"), object=fields.get("USER"))
    return _logon(event, action="sudo", success=ok, user=fields.get("USER"),
                  subject_user=m["caller"], process=fields.get("COMMAND"),
                  service=fields.get("TTY"), status="; ".join(problems) or None)


def _su(msg: str, event: dict[str, Any]) -> dict[str, Any] | None:
    m = SU_OK.match(msg)
    ok = bool(m)
    if not m:
        m = SU_FAIL.match(msg)
    if not m:
        return None
    to = m["to1"] or m["to2"] or m["to3"]
    by = m["by1"] or m["by2"] or m["by3"]
    tty = m.groupdict().get("tty") or m.groupdict().get("tty3")
    event.update(type="su" if ok else "su_failed", user=by, object=to)
    return _logon(event, action="su", success=ok, user=to, subject_user=by, service=tty,
                  process="su")


def auth_rows(app: str | None, msg: str, event: dict[str, Any]) -> dict[str, Any] | None:
    """Fill the auth fields of a syslog ``events`` row; the ``logons`` row when there is one.

    Args:
        app: the syslog APP-NAME/tag (``sshd``, ``sudo``, ``su``, ...).
        msg: the message text.
        event: the ``events`` row being built (``ts``, ``host``, lineage already set).

    Returns:
        A ``logons`` row dict, or None when the line records no authentication.
    """
    if not app:
        return None
    name = app.lower()
    if msg.startswith("pam_unix("):
        return _pam(msg, event)
    if name.startswith("sshd"):
        return _ssh(msg, event)
    if name == "sudo":
        return _sudo(msg, event)
    if name == "su":
        return _su(msg, event)
    return None
