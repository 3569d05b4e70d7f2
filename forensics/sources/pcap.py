"""Classic libpcap capture files (tcpdump's format).

Both byte orders, microsecond and nanosecond timestamps (magic numbers per
draft-ietf-opsawg-pcap §4). Records are walked by the compiled walker; a record
whose length is implausible is reported with its offset and skipped by
resynchronising on the next plausible record header.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from forensics.sources import register
from forensics.sources._frames import PCAP_MAGICS, FrameBatch, read_pcap

if TYPE_CHECKING:
    from forensics.ingest import IngestContext


@register
class PcapSource:
    """libpcap ``.pcap`` files."""

    name: ClassVar[str] = "pcap"

    def sniff(self, head: bytes) -> bool:
        """True for the four pcap magic numbers."""
        return head[:4] in PCAP_MAGICS

    def read(self, path: Path, ctx: IngestContext) -> Iterator[FrameBatch]:
        """Yield the file's frames in chunks."""
        return read_pcap(path, ctx)
