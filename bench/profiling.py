"""Optional sampling profiles of benchmark processes with py-spy (if installed).

``py-spy record --pid`` attaches to a running process without changing it
(``--nonblocking``: the target is never paused) and writes collapsed stacks;
:func:`summarize` turns them into the top functions by self and total samples.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path


def py_spy() -> str | None:
    candidate = Path(sys.executable).parent / "py-spy"
    if candidate.exists():
        return str(candidate)
    return shutil.which("py-spy")


def attach(pid: int, out: Path, rate: int = 100) -> subprocess.Popen | None:
    exe = py_spy()
    if exe is None:
        return None
    return subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking",
         "--format", "raw", "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def _name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['func']} ({path})"


def summarize(raw: Path, top: int = 15) -> dict:
    """Top functions by self samples and by total (inclusive) samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        count = int(match[2])
        frames = [_name(f) for f in match[1].split(";") if f]
        # py-spy prefixes the thread ("process 123:..." / "thread (0x..)"); skip those.
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count

    def table(counter: Counter[str]) -> list[dict]:
        return [
            {"function": name, "samples": n, "share": n / samples if samples else 0.0}
            for name, n in counter.most_common(top)
        ]

    return {"samples": samples, "self": table(own), "total": table(total)}


def format_summary(label: str, summary: dict, top: int = 12) -> str:
    lines = [f"profile of {label}: {summary['samples']:,} samples (py-spy, CPU-active only)"]
    lines.append("  self time:")
    for row in summary["self"][:top]:
        lines.append(f"    {row['share']:6.1%}  {row['function']}")
    lines.append("  total time (function and what it calls):")
    for row in summary["total"][:top]:
        lines.append(f"    {row['share']:6.1%}  {row['function']}")
    return "\n".join(lines)
