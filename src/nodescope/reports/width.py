"""How wide a Rich table renders when no cell is cut."""

from __future__ import annotations

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table


def table_width(table: Table) -> int:
    """Characters the table needs to show every line of every cell uncut."""
    wide = Console(width=100_000)
    return Measurement.get(wide, wide.options, table).maximum
