"""Small wording helpers shared by the terminal output."""

from __future__ import annotations


def plural(n: int, noun: str) -> str:
    """`1 member`, `3 members`."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
