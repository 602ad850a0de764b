"""The report panels' shared table look, and how wide a table renders uncut."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table


def panel_table(title: str | None, caption: str | None, **options) -> Table:
    """A panel: title and caption left-aligned, one heavy rule under the headers, one
    space between columns and none at the edges."""
    return Table(
        title=title,
        title_justify="left",
        caption=caption,
        caption_justify="left",
        box=box.SIMPLE_HEAVY,
        pad_edge=False,
        collapse_padding=True,
        **options,
    )


def table_width(table: Table) -> int:
    """Characters the table needs to show every line of every cell uncut."""
    wide = Console(width=100_000)
    return Measurement.get(wide, wide.options, table).maximum
