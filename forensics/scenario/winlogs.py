"""Windows event logs as NXLog JSON lines, shaped like the Security-Datasets host logs.

Each record has NXLog's envelope (``EventTime``, ``Hostname``, ``Channel``,
``EventID``, ``RecordNumber``, ``SourceName``, ``Category``, ...) and the event's
own data fields under their Windows names (``TargetUserName``, ``IpAddress``,
``LogonType``, ``ServiceName``, ``ImagePath``, ``CommandLine``, ...), values as
strings where Windows renders them as strings. The hosts run on UTC, so
``EventTime`` (NXLog's local time) equals the UTC time; ``@timestamp`` and
Sysmon's ``UtcTime`` carry milliseconds.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from forensics.scenario.hosts import DOMAIN, NETBIOS, Host, User

__all__ = ["WinLog"]

SECURITY = "Security"
SYSTEM = "System"
SYSMON = "Microsoft-Windows-Sysmon/Operational"
_SEC_GUID = "{54849625-5478-4994-A5BA-3E3B0328C30D}"
_SYSMON_GUID = "{5770385F-C22A-43E0-BF4C-06F5698FFBD9}"
_SCM_GUID = "{555908D1-A6D7-4695-8E1E-26931D2012F4}"
_ADMIN_PRIVS = ("SeSecurityPrivilege\r\n\t\t\tSeBackupPrivilege\r\n\t\t\tSeRestorePrivilege\r\n\t\t\t"
                "SeTakeOwnershipPrivilege\r\n\t\t\tSeDebugPrivilege\r\n\t\t\tSeSystemEnvironmentPrivilege"
                "\r\n\t\t\tSeLoadDriverPrivilege\r\n\t\t\tSeImpersonatePrivilege\r\n\t\t\t"
                "SeDelegateSessionUserImpersonatePrivilege")
# EventID -> (Category, Task, message first line)
_META = {
    4624: ("Logon", 12544, "An account was successfully logged on."),
    4625: ("Logon", 12544, "An account failed to log on."),
    4634: ("Logoff", 12545, "An account was logged off."),
    4648: ("Logon", 12544, "A logon was attempted using explicit credentials."),
    4672: ("Special Logon", 12548, "Special privileges assigned to new logon."),
    4768: ("Kerberos Authentication Service", 14339, "A Kerberos authentication ticket (TGT) was requested."),
    4769: ("Kerberos Service Ticket Operations", 14337, "A Kerberos service ticket was requested."),
    4776: ("Credential Validation", 14336,
           "The computer attempted to validate the credentials for an account."),
}


def _ts(t_us: int) -> datetime:
    return datetime.fromtimestamp(t_us // 1_000_000, UTC).replace(microsecond=t_us % 1_000_000)


class WinLog:
    """Collects Windows events of all hosts; :meth:`write` renders them in time order."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.events: list[tuple[int, int, str, str, int, dict[str, Any]]] = []
        self._logon_id: dict[str, int] = {}
        self._pid: dict[str, int] = {}

    # ---- plumbing -------------------------------------------------------------------

    def add(self, t: int, host: Host, channel: str, eid: int, fields: dict[str, Any]) -> None:
        """Record one event of ``host`` at ``t`` (µs)."""
        self.events.append((t, len(self.events), host.name, channel, eid, fields))

    def new_logon_id(self, host: Host) -> str:
        """A fresh logon id (hex, as Windows renders it) on ``host``."""
        n = self._logon_id.get(host.name, self.rng.randrange(0x200000, 0x900000))
        n += self.rng.randrange(0x40, 0x4000)
        self._logon_id[host.name] = n
        return f"0x{n:x}"

    def new_pid(self, host: Host) -> int:
        """A process id not used recently on ``host`` (multiples of 4, as Windows)."""
        n = self._pid.get(host.name, 4 * self.rng.randrange(200, 750))
        n += 4 * self.rng.randrange(1, 60)
        if n > 30000:
            n = 1000
        self._pid[host.name] = n
        return n

    def _guid(self) -> str:
        r = self.rng
        return (f"{{{r.getrandbits(32):08x}-{r.getrandbits(16):04x}-{r.getrandbits(16):04x}-"
                f"{r.getrandbits(16):04x}-{r.getrandbits(48):012x}}}")

    # ---- Security -------------------------------------------------------------------

    def logon(self, t: int, host: Host, user: User, logon_type: int, *, ip: str = "-",
              port: str = "-", workstation: str = "-", auth: str = "NTLM") -> str:
        """4624 (and 4672 for administrators). Returns the new logon id."""
        lid = self.new_logon_id(host)
        network = logon_type == 3
        f = {
            "SubjectUserSid": "S-1-0-0" if network else "S-1-5-18",
            "SubjectUserName": "-" if network else f"{host.name}$",
            "SubjectDomainName": "-" if network else NETBIOS,
            "SubjectLogonId": "0x0" if network else "0x3e7",
            "TargetUserSid": user.sid, "TargetUserName": user.account, "TargetDomainName": NETBIOS,
            "TargetLogonId": lid, "LogonType": str(logon_type),
            "LogonProcessName": "NtLmSsp " if auth == "NTLM" else "User32 ",
            "AuthenticationPackageName": auth, "WorkstationName": workstation,
            "LogonGuid": "{00000000-0000-0000-0000-000000000000}" if auth == "NTLM" else self._guid(),
            "TransmittedServices": "-", "LmPackageName": "NTLM V2" if auth == "NTLM" else "-",
            "KeyLength": "128" if auth == "NTLM" else "0",
            "ProcessId": "0x0" if network else "0x2a8",
            "ProcessName": "-" if network else "C:\\Windows\\System32\\svchost.exe",
            "IpAddress": ip, "IpPort": port, "ImpersonationLevel": "%%1833",
            "RestrictedAdminMode": "-" if logon_type != 10 else "%%1843",
            "TargetOutboundUserName": "-", "TargetOutboundDomainName": "-",
            "VirtualAccount": "%%1843", "TargetLinkedLogonId": "0x0",
            "ElevatedToken": "%%1842" if user.admin else "%%1843",
        }
        f["Message"] = (f"{_META[4624][2]}\r\n\r\nLogon Information:\r\n\tLogon Type:\t\t{logon_type}"
                        f"\r\n\r\nNew Logon:\r\n\tAccount Name:\t\t{user.account}\r\n\tAccount Domain:"
                        f"\t\t{NETBIOS}\r\n\tLogon ID:\t\t{lid.upper().replace('0X', '0x')}\r\n\r\n"
                        f"Network Information:\r\n\tWorkstation Name:\t{workstation}\r\n\tSource "
                        f"Network Address:\t{ip}\r\n\tSource Port:\t\t{port}\r\n\r\nDetailed "
                        f"Authentication Information:\r\n\tAuthentication Package:\t{auth}")
        self.add(t, host, SECURITY, 4624, f)
        if user.admin:
            self.add(t, host, SECURITY, 4672, {
                "SubjectUserSid": user.sid, "SubjectUserName": user.account,
                "SubjectDomainName": NETBIOS, "SubjectLogonId": lid, "PrivilegeList": _ADMIN_PRIVS,
                "Message": f"{_META[4672][2]}\r\n\r\nSubject:\r\n\tAccount Name:\t\t{user.account}"})
        return lid

    def logoff(self, t: int, host: Host, user: User, logon_id: str, logon_type: int) -> None:
        """4634."""
        self.add(t, host, SECURITY, 4634, {
            "TargetUserSid": user.sid, "TargetUserName": user.account, "TargetDomainName": NETBIOS,
            "TargetLogonId": logon_id, "LogonType": str(logon_type),
            "Message": f"{_META[4634][2]}\r\n\r\nSubject:\r\n\tAccount Name:\t\t{user.account}"
                       f"\r\n\r\nLogon Type:\t\t\t{logon_type}"})

    def failed(self, t: int, host: Host, account: str, logon_type: int, *, ip: str = "-",
               port: str = "-", workstation: str = "-", sub_status: str = "0xc000006a") -> None:
        """4625 (wrong password by default; 0xc0000064 for an unknown user)."""
        self.add(t, host, SECURITY, 4625, {
            "SubjectUserSid": "S-1-0-0", "SubjectUserName": "-", "SubjectDomainName": "-",
            "SubjectLogonId": "0x0", "TargetUserSid": "S-1-0-0", "TargetUserName": account,
            "TargetDomainName": NETBIOS, "Status": "0xc000006d", "FailureReason": "%%2313",
            "SubStatus": sub_status, "LogonType": str(logon_type),
            "LogonProcessName": "NtLmSsp " if logon_type == 3 else "User32 ",
            "AuthenticationPackageName": "NTLM" if logon_type == 3 else "Negotiate",
            "WorkstationName": workstation, "TransmittedServices": "-", "LmPackageName": "-",
            "KeyLength": "0", "ProcessId": "0x0", "ProcessName": "-", "IpAddress": ip,
            "IpPort": port,
            "Message": f"{_META[4625][2]}\r\n\r\nAccount For Which Logon Failed:\r\n\tAccount Name:"
                       f"\t\t{account}\r\n\r\nFailure Information:\r\n\tFailure Reason:\t\tUnknown "
                       f"user name or bad password.\r\n\tStatus:\t\t\t0xC000006D\r\n\tSub Status:\t\t"
                       f"{sub_status.upper().replace('0X', '0x')}\r\n\r\nNetwork Information:\r\n\t"
                       f"Source Network Address:\t{ip}"})

    def explicit(self, t: int, host: Host, subject: User, subject_logon: str, target: User,
                 server: str, process: str, pid: int) -> None:
        """4648: ``subject`` used ``target``'s credentials for ``server``."""
        self.add(t, host, SECURITY, 4648, {
            "SubjectUserSid": subject.sid, "SubjectUserName": subject.account,
            "SubjectDomainName": NETBIOS, "SubjectLogonId": subject_logon,
            "LogonGuid": "{00000000-0000-0000-0000-000000000000}",
            "TargetUserName": target.account, "TargetDomainName": NETBIOS,
            "TargetLogonGuid": "{00000000-0000-0000-0000-000000000000}",
            "TargetServerName": server, "TargetInfo": server, "ProcessId": hex(pid),
            "ProcessName": process, "IpAddress": "-", "IpPort": "-",
            "Message": f"{_META[4648][2]}\r\n\r\nAccount Whose Credentials Were Used:\r\n\tAccount "
                       f"Name:\t\t{target.account}\r\n\r\nTarget Server:\r\n\tTarget Server Name:\t"
                       f"{server}\r\n\r\nProcess Information:\r\n\tProcess Name:\t\t{process}"})

    def tgt(self, t: int, dc: Host, user: User, ip: str, port: int) -> None:
        """4768 on the domain controller."""
        self.add(t, dc, SECURITY, 4768, {
            "TargetUserName": user.account, "TargetDomainName": DOMAIN.upper(),
            "TargetSid": user.sid, "ServiceName": "krbtgt", "ServiceSid": f"{user.sid.rsplit('-', 1)[0]}-502",
            "TicketOptions": "0x40810010", "Status": "0x0", "TicketEncryptionType": "0x12",
            "PreAuthType": "2", "IpAddress": f"::ffff:{ip}", "IpPort": str(port),
            "CertIssuerName": "", "CertSerialNumber": "", "CertThumbprint": "",
            "Message": f"{_META[4768][2]}\r\n\r\nAccount Information:\r\n\tAccount Name:\t\t"
                       f"{user.account}\r\n\r\nNetwork Information:\r\n\tClient Address:\t\t::ffff:{ip}"})

    def tgs(self, t: int, dc: Host, user: User, service: str, ip: str, port: int) -> None:
        """4769 on the domain controller (``service`` such as ``FS01$``)."""
        self.add(t, dc, SECURITY, 4769, {
            "TargetUserName": f"{user.account}@{DOMAIN.upper()}", "TargetDomainName": DOMAIN.upper(),
            "ServiceName": service, "ServiceSid": f"{user.sid.rsplit('-', 1)[0]}-{1000 + len(service)}",
            "TicketOptions": "0x40810000", "TicketEncryptionType": "0x12",
            "IpAddress": f"::ffff:{ip}", "IpPort": str(port), "Status": "0x0",
            "LogonGuid": self._guid(), "TransmittedServices": "-",
            "Message": f"{_META[4769][2]}\r\n\r\nAccount Information:\r\n\tAccount Name:\t\t"
                       f"{user.account}@{DOMAIN.upper()}\r\n\r\nService Information:\r\n\tService "
                       f"Name:\t\t{service}\r\n\r\nNetwork Information:\r\n\tClient Address:\t\t::ffff:{ip}"})

    def ntlm_check(self, t: int, dc: Host, account: str, workstation: str, ok: bool = True) -> None:
        """4776 on the domain controller."""
        status = "0x0" if ok else "0xc000006a"
        self.add(t, dc, SECURITY, 4776, {
            "PackageName": "MICROSOFT_AUTHENTICATION_PACKAGE_V1_0", "TargetUserName": account,
            "Workstation": workstation, "Status": status,
            "Message": f"{_META[4776][2]}\r\n\r\nAuthentication Package:\tMICROSOFT_AUTHENTICATION_"
                       f"PACKAGE_V1_0\r\nLogon Account:\t{account}\r\nSource Workstation:\t"
                       f"{workstation}\r\nError Code:\t{status}"})

    # ---- System and Sysmon ----------------------------------------------------------

    def service_install(self, t: int, host: Host, installer: User, name: str, image: str) -> None:
        """System 7045: a service was installed."""
        self.add(t, host, SYSTEM, 7045, {
            "UserID": installer.sid, "AccountName": installer.account, "Domain": NETBIOS,
            "AccountType": "User", "ServiceName": name, "ImagePath": image,
            "ServiceType": "user mode service", "StartType": "demand start",
            "Message": f"A service was installed in the system.\r\n\r\nService Name:  {name}\r\n"
                       f"Service File Name:  {image}\r\nService Type:  user mode service\r\n"
                       f"Service Start Type:  demand start\r\nService Account:  LocalSystem"})

    def process(self, t: int, host: Host, image: str, cmdline: str, *, user: str, logon_id: str,
                parent: tuple[int, str, str, str] | None = None, integrity: str = "Medium",
                hashes: str | None = None, describe: tuple[str, str, str] = ("-", "-", "-"),
                ) -> tuple[int, str, str, str]:
        """Sysmon 1 (process create). Returns ``(pid, guid, image, cmdline)`` for children."""
        pid = self.new_pid(host)
        guid = self._guid()
        ppid, pguid, pimage, pcmd = parent or (4, "{00000000-0000-0000-0000-000000000000}", "System", "")
        sha = hashes or ("SHA256=" + "".join(self.rng.choice("0123456789ABCDEF") for _ in range(64)))
        self.add(t, host, SYSMON, 1, {
            "RuleName": "-", "UtcTime": _ts(t).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            "ProcessGuid": guid, "ProcessId": str(pid), "Image": image,
            "FileVersion": describe[0], "Description": describe[1], "Product": describe[2],
            "Company": "-" if describe[2] == "-" else "Microsoft Corporation",
            "OriginalFileName": image.rsplit("\\", 1)[-1], "CommandLine": cmdline,
            "CurrentDirectory": "C:\\Windows\\system32\\", "User": user,
            "LogonGuid": self._guid(), "LogonId": logon_id, "TerminalSessionId": "0" if
            user.startswith("NT AUTHORITY") else "1", "IntegrityLevel": integrity, "Hashes": sha,
            "ParentProcessGuid": pguid, "ParentProcessId": str(ppid), "ParentImage": pimage,
            "ParentCommandLine": pcmd,
        })
        return pid, guid, image, cmdline

    def netconn(self, t: int, host: Host, proc: tuple[int, str, str, str], user: str, src: str,
                sport: int, dst: str, dport: int, dst_name: str = "-") -> None:
        """Sysmon 3 (network connection initiated)."""
        self.add(t, host, SYSMON, 3, {
            "RuleName": "-", "UtcTime": _ts(t).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            "ProcessGuid": proc[1], "ProcessId": str(proc[0]), "Image": proc[2], "User": user,
            "Protocol": "tcp", "Initiated": "true", "SourceIsIpv6": "false", "SourceIp": src,
            "SourceHostname": f"{host.name}.{DOMAIN}", "SourcePort": str(sport),
            "SourcePortName": "-", "DestinationIsIpv6": "false", "DestinationIp": dst,
            "DestinationHostname": dst_name, "DestinationPort": str(dport),
            "DestinationPortName": "-",
        })

    # ---- output ---------------------------------------------------------------------

    def write(self, path: Path) -> int:
        """Write every event as one JSON line, in time order, with NXLog's envelope.

        Returns:
            The number of events written.
        """
        self.events.sort(key=lambda e: (e[0], e[1]))
        record: dict[tuple[str, str], int] = {}
        lines = []
        for t, _, hname, channel, eid, fields in self.events:
            k = (hname, channel)
            record[k] = record.get(k, self.rng.randrange(1000, 90000) if channel != SYSMON else
                                   self.rng.randrange(10000, 900000)) + 1
            when = _ts(t)
            recv = _ts(t + 1_000_000 + (t % 700_000))
            failure = eid == 4625
            if channel == SECURITY:
                cat, task, _ = _META.get(eid, ("Other", 0, ""))
                src, guid, etype = "Microsoft-Windows-Security-Auditing", _SEC_GUID, (
                    "AUDIT_FAILURE" if failure else "AUDIT_SUCCESS")
                kw = -9218868437227405312 if failure else -9214364837600034816
            elif channel == SYSTEM:
                cat, task, src, guid, etype = "-", 0, "Service Control Manager", _SCM_GUID, "INFO"
                kw = -9187343239835811840
            else:
                cat = ("Process Create (rule: ProcessCreate)" if eid == 1
                       else "Network connection detected (rule: NetworkConnect)")
                task, src, guid, etype = eid, "Microsoft-Windows-Sysmon", _SYSMON_GUID, "INFO"
                kw = -9223372036854775808
            rec: dict[str, Any] = {
                "EventTime": when.strftime("%Y-%m-%d %H:%M:%S"),
                "EventReceivedTime": recv.strftime("%Y-%m-%d %H:%M:%S"),
                "@timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                "Hostname": f"{hname}.{DOMAIN}", "host": f"wec.{DOMAIN}", "port": 60101,
                "Keywords": kw, "EventType": etype, "SeverityValue": 4 if failure else 2,
                "Severity": "ERROR" if failure else "INFO", "EventID": eid, "SourceName": src,
                "ProviderGuid": guid, "Version": 2 if eid == 4624 else (5 if channel == SYSMON else 0),
                "Task": task, "OpcodeValue": 0, "Opcode": "Info", "RecordNumber": record[k],
                "ExecutionProcessID": 700 if channel != SYSMON else 2980,
                "ThreadID": 4000 + (t // 1000) % 3000, "Channel": channel, "Category": cat,
                "SourceModuleName": "eventlog", "SourceModuleType": "im_msvistalog",
                "@version": "1", "tags": ["breachbookScenario"],
            }
            if channel == SYSMON:
                rec.update({"AccountName": "SYSTEM", "Domain": "NT AUTHORITY", "AccountType": "User",
                            "UserID": "S-1-5-18"})
            rec.update(fields)
            lines.append(json.dumps(rec, ensure_ascii=False))
        path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
        return len(lines)
