"""pcapng capture files (draft-ietf-opsawg-pcapng).

Several sections, each with its own byte order; several interfaces, each with
its own link type and timestamp resolution (``if_tsresol``) and offset
(``if_tsoffset``). Enhanced, simple and obsolete packet blocks are read; name
resolution, statistics and custom blocks are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from forensics.sources import register
from forensics.sources._frames import PCAPNG_SHB, FrameBatch, read_pcapng

if TYPE_CHECKING:
    from forensics.ingest import IngestContext


@register
class PcapngSource:
    """pcapng files."""

    name: ClassVar[str] = "pcapng"

    def sniff(self, head: bytes) -> bool:
        """True when the file starts with a section header block and a byte-order magic."""
        return head[:4] == PCAPNG_SHB and head[8:12] in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d")

    def read(self, path: Path, ctx: IngestContext) -> Iterator[FrameBatch]:
        """Yield the file's frames in chunks."""
        return read_pcapng(path, ctx)
