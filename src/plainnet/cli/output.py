"""Where the CLI prints for people: one rich console.

When output goes to a pipe or a log (CI, the README demo), rich would assume 80
columns and cut addresses short with an ellipsis; there it gets room for a full row.
"""

from __future__ import annotations

import sys

from rich.console import Console

console = Console(width=None if sys.stdout.isatty() else 160)
