"""What each record means for lateral movement: techniques, families, ports, vehicles (private).

One table of knowledge, kept apart from the code that applies it, so a new
technique is one line here. Sources for the indicators: Microsoft's audit
event documentation (4624 logon types, 4648, 4697/7045, 5140/5145 access
masks), Sysmon's schema (events 1, 3, 7, 11, 18), JPCERT/CC "Detecting Lateral
Movement through Tracking Event Logs" (2017) and the SANS "Hunt Evil" poster.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

import pandas as pd

# technique -> (family, default protocol, default port, level)
#   level: execution (code ran on the target), logon (credentials accepted), contact.
TECHNIQUES: dict[str, tuple[str, str, int | None, str]] = {
    "psexec": ("service", "smb", 445, "execution"),
    "service_install": ("service", "dce_rpc", 445, "execution"),
    "service_control": ("service", "dce_rpc", 445, "logon"),
    "wmi": ("wmi", "dce_rpc", 135, "execution"),
    "dcom": ("dcom", "dce_rpc", 135, "execution"),
    "winrm": ("winrm", "http", 5985, "execution"),
    "rdp": ("rdp", "rdp", 3389, "execution"),
    "ssh": ("ssh", "ssh", 22, "execution"),
    "smb_copy": ("smb_copy", "smb", 445, "logon"),
    "scheduled_task": ("scheduled_task", "dce_rpc", 445, "execution"),
    "remote_registry": ("remote_registry", "dce_rpc", 445, "logon"),
    "smb_named_pipe": ("smb", "smb", 445, "execution"),
    "smb_admin_share": ("smb", "smb", 445, "logon"),
    "printerbug": ("coercion", "dce_rpc", 445, "contact"),
    "mssql": ("mssql", "tds", 1433, "execution"),
    "webshell": ("webshell", "http", 80, "execution"),
    "remote_image_load": ("remote_file", "smb", 445, "contact"),
    "pass_the_hash": ("credentials", "ntlm", None, "contact"),
    "network_logon": ("logon", "smb", None, "logon"),
    "explicit_credentials": ("credentials", "kerberos", None, "contact"),
    "kerberos_service_ticket": ("kerberos", "kerberos", 88, "contact"),
    "smb": ("smb", "smb", 445, "contact"),
    "rpc": ("rpc", "dce_rpc", 135, "contact"),
}
LEVELS = {"contact": 1, "logon": 2, "execution": 3}

# Ports a family's traffic may use (None: any dynamic RPC port >= 1024 after a 135 bind).
FAMILY_PORTS: dict[str, set[int | None]] = {
    "service": {445, 139, 135, None}, "wmi": {135, None, 445}, "dcom": {135, None},
    "winrm": {5985, 5986, 80, 443}, "rdp": {3389}, "ssh": {22}, "smb_copy": {445, 139},
    "scheduled_task": {445, 139, 135, None}, "remote_registry": {445, 139, 135, None},
    "smb": {445, 139}, "coercion": {445, 139, 135, None}, "mssql": {1433},
    "webshell": {80, 443, 8080, 8443}, "remote_file": {445, 139},
}
# Ports whose sessions are lateral movement on their own (others only prove a host-log edge).
STANDALONE_PORTS = {3389: "rdp", 22: "ssh", 5985: "winrm", 5986: "winrm", 1433: "mssql"}
ADMIN_PORTS = {22, 135, 139, 445, 1433, 3389, 5985, 5986}
SERVER_PORTS = ADMIN_PORTS | {53, 80, 88, 389, 443, 464, 636, 3268, 3269, 8080, 8443, 123, 137, 138}
PORT_TECHNIQUE = {445: "smb", 139: "smb", 135: "rpc", 3389: "rdp", 22: "ssh", 5985: "winrm", 5986: "winrm",
                  1433: "mssql"}

# Parent process (basename) -> technique of its children on the target.
PARENT_VEHICLES = {
    "wmiprvse.exe": "wmi", "wsmprovhost.exe": "winrm", "winrshost.exe": "winrm", "mmc.exe": "dcom",
    "w3wp.exe": "webshell", "httpd.exe": "webshell", "php-cgi.exe": "webshell", "tomcat.exe": "webshell",
    "sqlservr.exe": "mssql",
}
# Processes that are themselves the sign (started by the service host for a remote client).
SELF_VEHICLES = {"wsmprovhost.exe": "winrm", "winrshost.exe": "winrm"}
DCOM_EMBEDDING = {"mshta.exe", "mmc.exe"}  # launched "-Embedding" by DcomLaunch: DCOM lateral movement
# Children of services.exe that are service-based execution rather than a normal service.
SERVICE_CHILDREN = {"cmd.exe", "powershell.exe", "pwsh.exe", "rundll32.exe", "mshta.exe", "regsvr32.exe",
                    "cscript.exe", "wscript.exe", "psexesvc.exe", "remcomsvc.exe", "csexecsvc.exe"}
PSEXEC_NAMES = re.compile(r"psexe(c|svc)|remcom|paexec|csexec|winexesvc|btobto", re.I)
# Source-side command lines that name the target.
# A tool name, then what follows it on the line: the first mention of the tool on each line
# is taken once ((?m)^(?>.*?NAME)); searching from every mention tried the rest of the line
# again from each (quadratic: 1.4-3 s for a 64 KiB command line of "wmic wmic ...").
SOURCE_COMMANDS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?m)^(?>.*?\bwmic(?:\.exe)?\b).*?/node:\s*\"?([^\s\"/]+)", re.I), "wmi"),
    (re.compile(r"(?m)^(?>.*?\bpsexec(?:64)?(?:\.exe)?\b).*?\\\\([^\s\\]+)", re.I), "psexec"),
    (re.compile(r"\bsc(?:\.exe)?\s+\\\\([^\s\\]+)\s+create\b", re.I), "service_install"),
    (re.compile(r"\bsc(?:\.exe)?\s+\\\\([^\s\\]+)", re.I), "service_control"),
    (re.compile(r"(?m)^(?>.*?\bschtasks(?:\.exe)?\b).*?/s\s+\"?([^\s\"]+)", re.I), "scheduled_task"),
    (re.compile(r"\bat(?:\.exe)?\s+\\\\([^\s\\]+)", re.I), "scheduled_task"),
    (re.compile(r"(?m)^(?>.*?\bmstsc(?:\.exe)?\b).*?/v:\s*\"?([^\s\":]+)", re.I), "rdp"),
    (re.compile(r"(?m)^(?>.*?\bwinrs(?:\.exe)?\b).*?-r(?:emote)?:\s*\"?(?:https?://)?([^\s\":/]+)", re.I),
     "winrm"),
    (re.compile(r"(?m)^(?>.*?(?:Enter-PSSession|Invoke-Command|New-PSSession)\b).*?-ComputerName\s+\"?"
                r"([^\s\";,]+)", re.I), "winrm"),
    (re.compile(r"\bssh(?:\.exe)?\s+(?:-\S+\s+)*(?:[^\s@]+@)?([A-Za-z0-9][\w.-]*)\s*$", re.I), "ssh"),
]
# IPC$ named pipes (5145 RelativeTargetName, Sysmon 18, smb_files) -> technique.
PIPES = {"svcctl": "service_control", "ntsvcs": "service_control", "atsvc": "scheduled_task",
         "winreg": "remote_registry", "spoolss": "printerbug"}
BENIGN_PIPES = {"lsarpc", "samr", "netlogon", "srvsvc", "wkssvc", "browser", "epmapper", "eventlog",
                "initshutdown", "protected_storage", "lsass", "ntsvcs", "svcctl", "atsvc", "winreg",
                "spoolss",
                "tsvcpipe", "dhcpcsvc", "keysvc", "scerpc", "trkwks", "w32time", "wmi", "netdfs", "mojo",
                "chrome", "pshost", "gecko", "cpfatp"}
CREDENTIAL_DUMP = re.compile(r"comsvcs(\.dll)?[\s,]+#?(minidump|24)|(?m:^)(?>.*?procdump).*lsass|sekurlsa|"
                             r"lsass\.dmp|nanodump|lsassy|mimikatz|out-minidump", re.I)
# Folders attackers drop binaries in (ProgramData\Microsoft holds Defender and other real services).
_DROP_DIRS = re.compile(r"\\(temp|users\\public|programdata(?!\\microsoft\\)|perflogs)\\", re.I)
SYSTEM_ACCOUNTS = {"system", "local service", "network service", "anonymous logon", "localsystem", "-", "",
                   "nt authority\\system", "font driver host", "window manager", "iusr", "defaultapppool"}
_SPN_FAMILY = {"rpcss": "wmi", "host": None, "cifs": "smb_copy", "http": "winrm", "wsman": "winrm",
               "termsrv": "rdp", "mssqlsvc": "mssql"}
_PROCESS_FAMILY = {"wmic.exe": "wmi", "mstsc.exe": "rdp", "psexec.exe": "service", "psexec64.exe": "service",
                   "sc.exe": "service", "ssh.exe": "ssh", "winrs.exe": "winrm",
                   "schtasks.exe": "scheduled_task"}


def technique_info(technique: str) -> tuple[str, str, int | None, str]:
    """(family, protocol, default port, level) of a technique."""
    return TECHNIQUES.get(technique, (technique, "unknown", None, "contact"))


def family_of(technique: str | None) -> str | None:
    """The family a technique belongs to (service, wmi, winrm, ...)."""
    return technique_info(technique)[0] if technique else None


def norm_account(user: Any) -> str | None:
    """Account name for the graph: lower case, no domain; None for machine and system accounts."""
    if user is None or (isinstance(user, float) and math.isnan(user)) or pd.isna(user):
        return None
    u = str(user).strip()
    if "\\" in u:
        u = u.rsplit("\\", 1)[1]
    if "@" in u:
        u = u.split("@", 1)[0]
    u = u.strip().lower()
    if not u or u.endswith("$") or u in SYSTEM_ACCOUNTS or u.startswith(("dwm-", "umfd-", "nt service")):
        return None
    return u


def basename(path: Any) -> str:
    """Lower-case file name of a Windows or POSIX path ('' for missing)."""
    if not isinstance(path, str):
        return ""
    return re.split(r"[\\/]", path.strip().strip('"'))[-1].lower()


def entropy(s: str) -> float:
    """Shannon entropy of a string in bits per character."""
    if not s:
        return 0.0
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def random_name(name: str) -> bool:
    """A name that looks machine-generated (mixed case or digits, no vowel pattern, short)."""
    stem = re.sub(r"\.[a-z0-9]{2,4}$", "", name, flags=re.I)
    if not stem or not stem.isalnum() or len(stem) > 16:
        return False
    mixed = any(c.isupper() for c in stem[1:]) and any(c.islower() for c in stem)
    digits = any(c.isdigit() for c in stem) and any(c.isalpha() for c in stem)
    return (mixed or digits) and len(set(stem.lower())) >= min(4, len(stem))


def service_technique(name: Any, image: Any) -> str | None:
    """Technique of a service install (7045/4697), or None when it looks like an ordinary service.

    PsExec and its clones, commands run through cmd/PowerShell, and binaries with
    machine-made names dropped straight into the Windows folder are remote execution.
    """
    n, img = str(name or ""), str(image or "")
    low = img.lower()
    if PSEXEC_NAMES.search(n) or PSEXEC_NAMES.search(img):
        return "psexec"
    if re.search(r"%comspec%|cmd(\.exe)?\s*/[cqkb]|powershell|pwsh|mshta|rundll32|regsvr32|\\\\127\.0\.0\.1|"
                 r"\\admin\$|\\c\$", low):
        return "psexec"
    exe = basename(img)
    folder = low.replace('"', "").rsplit("\\", 1)[0] if "\\" in low else ""
    # Service binaries live in System32 or Program Files; one dropped straight into the
    # Windows folder is how PsExec (PSEXESVC.exe) and its clones (random names) run.
    if folder in ("%systemroot%", "c:\\windows", "%windir%", "\\systemroot") and exe.endswith(".exe"):
        return "psexec"
    if exe and not folder and exe.endswith(".exe"):  # a bare program name: a command, not a service binary
        return "service_install"
    if _DROP_DIRS.search(low) and exe.endswith((".exe", ".bat")):
        return "service_install"
    return None


def admin_root_exe(share: str, name: str) -> bool:
    """A program written straight into ADMIN$ (the Windows folder): a PsExec-style service binary."""
    return share.upper() == "ADMIN$" and "\\" not in name.strip("\\") and name.lower().endswith(".exe")


def service_child(process: Any) -> bool:
    """A child of services.exe that is service-based execution rather than a normal service."""
    exe = basename(process)
    if exe in SERVICE_CHILDREN or PSEXEC_NAMES.search(exe):
        return True
    p = str(process or "").lower()
    folder = p.rsplit("\\", 1)[0] if "\\" in p else ""
    return (folder == "c:\\windows" and random_name(exe)) or bool(
        _DROP_DIRS.search(p))


def source_command(command_line: Any) -> tuple[str, str] | None:
    r"""(technique, target) when a command line on the source names its target (wmic /node:, sc \\x, ...)."""
    if not isinstance(command_line, str):
        return None
    for pat, tech in SOURCE_COMMANDS:
        m = pat.search(command_line)
        if m:
            return tech, m.group(1)
    return None


def hint_from_spn(spn: Any, process: Any = None) -> str | None:
    """Family suggested by the SPN or process of an explicit-credentials event (4648)."""
    fam = _PROCESS_FAMILY.get(basename(process))
    if fam:
        return fam
    if isinstance(spn, str) and "/" in spn:
        return _SPN_FAMILY.get(spn.split("/", 1)[0].lower())
    return None


def spn_host(spn: Any) -> str | None:
    """Host part of a service principal or service account name (``cifs/fs01.x`` or ``FS01$``)."""
    if not isinstance(spn, str) or not spn or spn.lower().startswith("krbtgt"):
        return None
    if "/" in spn:
        return spn.split("/", 2)[1].split(":", 1)[0].split("@", 1)[0]
    return spn[:-1] if spn.endswith("$") else None


def access_writes(mask: Any, access_list: Any) -> bool:
    """Whether a 5145 access mask or list includes writing data (WriteData/AppendData)."""
    if isinstance(access_list, str) and re.search(r"%%441[78]", access_list):
        return True
    if mask is None or (isinstance(mask, float) and math.isnan(mask)):
        return False
    try:
        m = int(str(mask), 16) if str(mask).lower().startswith("0x") else int(str(mask))
    except ValueError:
        return False
    return bool(m & 0x6)
