"""A parsed document with the position of every key and value, independent of the parser.

Kept apart from the YAML parser so that a cached parse can be rebuilt without importing
yaml at all (see cache.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Path = tuple[str | int, ...]


@dataclass
class YamlTree:
    """The built document plus positions (1-based line, column) by path."""

    value: Any
    positions: dict[Path, tuple[int, int]] = field(default_factory=dict)
    key_positions: dict[Path, tuple[int, int]] = field(default_factory=dict)
    errors: list[tuple[int, int, Path, str]] = field(default_factory=list)

    def where(self, path: Path, *, key: bool = False) -> tuple[int, int]:
        """Position of `path`, or of its nearest located ancestor."""
        p = path
        while True:
            if key and p in self.key_positions:
                return self.key_positions[p]
            if p in self.positions:
                return self.positions[p]
            if not p:
                return (1, 1)
            p = p[:-1]

    def to_json(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "positions": [[list(p), line, col] for p, (line, col) in self.positions.items()],
            "key_positions": [[list(p), line, col] for p, (line, col) in self.key_positions.items()],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> YamlTree:
        return cls(
            value=data["value"],
            positions={tuple(p): (int(line), int(col)) for p, line, col in data["positions"]},
            key_positions={tuple(p): (int(line), int(col)) for p, line, col in data["key_positions"]},
        )
