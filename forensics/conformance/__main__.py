"""``python -m forensics.conformance``: print the share of Zeek rows reproduced per table."""

from __future__ import annotations

import sys

from forensics.conformance import main

sys.exit(main())
