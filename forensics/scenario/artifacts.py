"""Files the story moves around: the harmless dropper, the service stub, the stolen data.

The "malware" is a minimal, well-formed PE32+ whose only code is
``xor eax, eax; ret`` (it exits at once if ever run). It imports nothing and
does nothing; its ``.rdata`` section carries a marker string that the bundled
YARA rules (``data/rules/breachbook-training.yar``) detect, plus filler.
Archives are stored (not deflated) zip files with fixed timestamps, so their
bytes do not depend on the zlib version.
"""

from __future__ import annotations

import hashlib
import io
import random
import struct
import zipfile

__all__ = ["DROPPER_MARKER", "IMPLANT_MARKER", "YARA_RULES", "digests", "pe_stub", "stolen_archive",
           "stolen_table"]

DROPPER_MARKER = "BREACHBOOK-TRAINING-DROPPER"
IMPLANT_MARKER = "BREACHBOOK-TRAINING-IMPLANT"
YARA_RULES = {DROPPER_MARKER: "Breachbook_Training_Dropper",
              IMPLANT_MARKER: "Breachbook_Training_Implant"}
_DOS_STUB = bytes.fromhex("0e1fba0e00b409cd21b8014ccd21") + b"This program cannot be run in DOS mode.\r\r\n$"


def digests(data: bytes) -> dict[str, str | int]:
    """SHA-256, SHA-1, MD5 and size of ``data``."""
    return {"sha256": hashlib.sha256(data).hexdigest(),
            "sha1": hashlib.sha1(data, usedforsecurity=False).hexdigest(),
            "md5": hashlib.md5(data, usedforsecurity=False).hexdigest(), "size": len(data)}


def pe_stub(rng: random.Random, marker: str | None, tag: str, size: int, timestamp: int) -> bytes:
    """A harmless PE32+ console program of about ``size`` bytes.

    Args:
        rng: random stream for the filler bytes.
        marker: the marker string for the YARA rules (None for a clean decoy).
        tag: free text placed next to the marker (scenario id, file role).
        size: approximate file size.
        timestamp: COFF TimeDateStamp (seconds since the epoch).
    """
    note = (f"{marker or 'ACME-VIEWER-SETUP'} :: {tag} :: harmless Breachbook training sample; "
            "it contains no functionality and exits immediately.\0").encode()
    rdata_len = max(len(note) + 64, size - 0x600)
    rdata_raw = (rdata_len + 0x1FF) // 0x200 * 0x200
    filler = rng.randbytes(rdata_raw - len(note))
    rdata = note + filler
    dos = struct.pack("<2s13H8sHH20sI", b"MZ", 0x90, 3, 0, 4, 0, 0xFFFF, 0, 0xB8, 0, 0, 0, 0x40, 0,
                      b"\0" * 8, 0, 0, b"\0" * 20, 0x80)
    dos += (_DOS_STUB + b"\0" * 64)[:0x80 - len(dos)]
    # PE/COFF spec: signature, file header (x64, 2 sections), optional header PE32+.
    coff = b"PE\0\0" + struct.pack("<HHIIIHH", 0x8664, 2, timestamp, 0, 0, 240, 0x0022)
    size_image = 0x2000 + (rdata_raw + 0xFFF) // 0x1000 * 0x1000
    opt = struct.pack("<HBBIIIII", 0x20B, 14, 29, 0x200, rdata_raw, 0, 0x1000, 0x1000)
    opt += struct.pack("<QIIHHHHHHIIIIHHQQQQII", 0x140000000, 0x1000, 0x200, 6, 0, 0, 0, 6, 0, 0,
                       size_image, 0x400, 0, 3, 0x8100, 0x100000, 0x1000, 0x100000, 0x1000, 0, 16)
    opt += b"\0" * (16 * 8)
    sections = struct.pack("<8sIIIIIIHHI", b".text", 3, 0x1000, 0x200, 0x400, 0, 0, 0, 0, 0x60000020)
    sections += struct.pack("<8sIIIIIIHHI", b".rdata", rdata_raw, 0x2000, rdata_raw, 0x600, 0, 0, 0,
                            0, 0x40000040)
    headers = dos + coff + opt + sections
    headers += b"\0" * (0x400 - len(headers))
    text = b"\x31\xc0\xc3" + b"\xcc" * (0x200 - 3)  # xor eax, eax; ret
    return headers + text + rdata


def stolen_table(rng: random.Random, n_bytes: int, kind: str) -> bytes:
    """A fake CSV export (``accounts``, ``suppliers`` or ``salaries``) of about ``n_bytes``."""
    first = ("Anna", "Ben", "Carla", "David", "Eva", "Farid", "Gina", "Hugo", "Ida", "Jonas", "Lena", "Marc")
    last = ("Berg", "Hall", "Diaz", "Ng", "Lund", "Khan", "Rossi", "Meyer", "Jansen", "Doe", "Vogel")
    if kind == "accounts":
        head = "username,email,last_login,password_sha1\n"
    elif kind == "suppliers":
        head = "supplier,contact,iban,bic,credit_limit_eur\n"
    else:
        head = "employee,department,grade,salary_eur\n"
    rows = [head]
    total = len(head)
    i = 0
    while total < n_bytes:
        f, la = rng.choice(first), rng.choice(last)
        if kind == "accounts":
            row = (f"{f[0].lower()}{la.lower()}{i},{f.lower()}.{la.lower()}@acme-corp.example,"
                   f"2026-02-{rng.randrange(1, 28):02d},{rng.getrandbits(160):040x}\n")
        elif kind == "suppliers":
            bic = rng.choice(("COBADEFFXXX", "DEUTDEFFXXX", "INGDDEFFXXX"))
            row = (f"{la} Trading {i},{f} {la},DE{rng.randrange(10**19, 10**20)},{bic},"
                   f"{rng.randrange(5, 500) * 1000}\n")
        else:
            dept = rng.choice(("Finance", "Sales", "HR", "IT"))
            row = f"{f} {la},{dept},{rng.randrange(1, 9)},{rng.randrange(38, 140) * 1000}\n"
        rows.append(row)
        total += len(row)
        i += 1
    return "".join(rows).encode()[:max(n_bytes, len(head))]


def stolen_archive(rng: random.Random, n_bytes: int, date: tuple[int, int, int, int, int, int],
                   ) -> tuple[bytes, list[str]]:
    """The zip the attacker stages: share documents (stored, fixed times). Returns it and its members."""
    members: list[tuple[str, bytes]] = [
        ("Finance/supplier_bank_details.csv", stolen_table(rng, max(2_000, n_bytes // 20), "suppliers")),
        ("HR/salaries_2026.csv", stolen_table(rng, max(2_000, n_bytes // 25), "salaries")),
    ]
    left = n_bytes - sum(len(d) for _, d in members)
    docs = ("Finance/Q1_2026_forecast.xlsx", "Finance/annual_report_draft.docx",
            "Projects/tender_northwind_offer.pdf", "HR/contracts_scan_2025.pdf",
            "Projects/customer_pricing_2026.xlsx")
    for i, name in enumerate(docs):
        part = left // (len(docs) - i) if i < len(docs) - 1 else left
        members.append((name, rng.randbytes(max(1_000, part))))
        left -= part
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members:
            zi = zipfile.ZipInfo(name, date)
            zi.create_system = 0
            zi.external_attr = 0x20  # FILE_ATTRIBUTE_ARCHIVE
            zf.writestr(zi, data)
    return buf.getvalue(), [m for m, _ in members]
