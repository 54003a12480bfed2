"""Where a profiled connector spent its time: a short, additive summary of a pyinstrument session.

    python -m tests.profiles .bench/profile-100000/profile.pyisession [--top 15]

pyinstrument's own views are a call tree (exact, but long and nested) and a flat list whose
percentages overlap. For "where does the time go" we want numbers that add up to 100%: each
sample's time is charged to the frame it was taken in (self time), then totalled per package
and per function. A sample taken in a C built-in (`dict.__getitem__`, `utf_8_decode`) is
charged to the Python package that called it; one taken while the event loop waited on its
selector is "idle": the connector had nothing to do (it waited on the network, on a pipe, or
on a sleep), or the machine did not give it a core.

pyinstrument samples one thread, the main one, which runs the asyncio loop: everything the
connector does except what it hands to worker threads (the CDK writes stdout from one).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

IDLE = "idle (event loop waiting)"
SELECTOR_WAITS = frozenset({"poll", "epoll.poll", "select", "select.select", "kqueue.control"})


@dataclass(frozen=True)
class Frame:
    function: str
    file: str
    line: str

    @classmethod
    def parse(cls, identifier: str) -> Frame:
        """A pyinstrument frame identifier: `function\\0file\\0line`, attributes after `\\1`."""
        function, file, line = (identifier.split("\x01", 1)[0].split("\x00") + ["", ""])[:3]
        return cls(function, file, line)

    @property
    def builtin(self) -> bool:
        return self.file == "<built-in>"

    @property
    def package(self) -> str:
        """The top-level package the frame's file belongs to (stdlib modules by name)."""
        path = self.file.replace("\\", "/")
        if "/site-packages/" in path:
            return path.split("/site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
        if path.startswith("<frozen "):
            return path.removeprefix("<frozen ").rstrip(">").split(".")[0]
        for marker in ("/lib/python3", "/lib64/python3"):
            if marker in path:
                rest = path.split(marker, 1)[1].split("/", 2)
                return rest[1].removesuffix(".py") if len(rest) > 1 else path
        parts = path.split("/")
        return parts[-2] if len(parts) > 1 else path

    def label(self) -> str:
        short = "/".join(self.file.replace("\\", "/").split("/")[-2:])
        return f"{self.function}  {short}:{self.line}" if self.line else f"{self.function}  {short}"


@dataclass
class Summary:
    duration: float
    cpu_time: float
    samples: int
    total: float  # seconds of samples
    by_package: Counter[str]
    by_function: Counter[str]

    def render(self, top: int) -> str:
        header = (
            f"{self.samples:,} samples over {self.duration:.1f}s of wall time, {self.cpu_time:.1f}s of CPU"
        )
        lines = [header, "by package (self time, adds up to 100%):"]
        lines += [f"  {share(t, self.total):>6}  {name}" for name, t in self.by_package.most_common(top)]
        lines.append(f"top {top} functions (self time; built-ins charged to their caller):")
        lines += [f"  {share(t, self.total):>6}  {name}" for name, t in self.by_function.most_common(top)]
        return "\n".join(lines)


def share(seconds: float, total: float) -> str:
    return f"{seconds / total:.1%}" if total else "-"


def summarize(session_file: Path) -> Summary:
    """Self time per package and per function, from a `.pyisession` file (pyinstrument 4-5)."""
    session = json.loads(session_file.read_text())
    by_package: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    total = 0.0
    for stack, seconds in session["frame_records"]:
        frames = [Frame.parse(identifier) for identifier in stack]
        total += seconds
        leaf = frames[-1]
        if leaf.builtin and leaf.function in SELECTOR_WAITS:
            by_package[IDLE] += seconds
            by_function[IDLE] += seconds
            continue
        owner = next((f for f in reversed(frames) if not f.builtin), leaf)
        by_package[owner.package] += seconds
        by_function[owner.label() if not leaf.builtin else f"{owner.label()} -> {leaf.function}"] += seconds
    return Summary(
        duration=float(session.get("duration", 0.0)),
        cpu_time=float(session.get("cpu_time", 0.0)),
        samples=int(session.get("sample_count", 0)),
        total=total,
        by_package=by_package,
        by_function=by_function,
    )


def render_tree(session_file: Path, text_file: Path) -> None:
    """pyinstrument's own call tree (library frames folded), for reading further."""
    subprocess.run(
        [sys.executable, "-m", "pyinstrument", "--load", str(session_file), "-r", "text", "--no-color",
         "--unicode", "-o", str(text_file)],
        check=True,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.profiles", description=__doc__.split("\n\n")[0])
    parser.add_argument("session", type=Path, help="a .pyisession file (pyinstrument -r pyisession)")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    print(summarize(args.session).render(args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
