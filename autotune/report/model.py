"""The report as a document: sections of paragraphs, tables, images and preformatted text. Analysis fills it,
the HTML and Markdown renderers read it; neither knows about the other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

NOT_RUN = ""   # the text of a cell that was not measured (or cannot be computed)

# The per-device sections, in page order; their ids are "<section>-<device>".
SECTIONS = ("overview", "best", "speedup", "convergence", "importance", "failures", "environment")
SECTION_TITLES = {"overview": "At a glance: the winners",
                  "environment": "Environment and problem keys", "best": "Best GFLOP/s per backend",
                  "speedup": "Tuned vs default speed-up", "convergence": "Convergence",
                  "importance": "Which parameters mattered", "failures": "Failed trials by reason"}


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]   # already formatted: renderers never format numbers
    caption: str = ""
    tips: dict[str, str] = field(default_factory=dict)   # cell text -> tooltip (a short name's full key)
    # Shown open, however long (the winners); other tables longer than COLLAPSE_ROWS start folded, so that the
    # charts carry the first read and the page stays a few screens per device.
    always_open: bool = False


COLLAPSE_ROWS = 16


@dataclass
class Image:
    png: bytes
    alt: str


@dataclass
class Pre:
    text: str


Block = Union[str, Table, Image, Pre]   # a str is a paragraph


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 3   # 2: a device, the comparison or the explain picture; 3: a section inside a device


@dataclass
class Report:
    title: str
    sources: list[str]
    notes: list[str]   # everything left out or missing, shown first so partial results read as such
    sections: list[Section]
    devices: list[str]
