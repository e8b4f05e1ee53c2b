"""Write one benchmark's section of a docs page, leaving the other sections as they are.

Each benchmark script owns the text between its two HTML comment markers (and the ``## ``
heading just before the start marker); a page without the markers gets the section
appended.
"""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path


def replace_section(path: Path, start: str, end: str, section: str, title: str) -> None:
    """Put ``section`` (heading, markers and body) in place of the old one in ``path``."""
    text = path.read_text("utf-8") if path.exists() else f"# {title}\n"
    # the last start marker and the first end marker after it: a start whose end was lost
    # (a hand edit), or an end quoted before the section, never spans the text between
    first = text.rfind(start)
    stop = text.find(end, first) if first >= 0 else -1
    if stop >= 0:
        begin = text.rfind("\n## ", 0, first) + 1
        text = text[:begin] + section.rstrip("\n") + text[stop + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, "utf-8")


def measured_line(note: str = "") -> str:
    """"Measured <date> on <machine>, <cores> cores (1-minute load average L at the
    end<note>), Python X, torch Y.": the last line of a speed section."""
    import torch

    return (f"Measured {datetime.date.today().isoformat()} on {platform.machine()}, "
            f"{os.cpu_count()} cores (1-minute load average {os.getloadavg()[0]:.1f} at the "
            f"end{note}), Python {platform.python_version()}, torch {torch.__version__}.")
