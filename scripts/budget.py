"""`make budget`: qtasks-core stays small enough to read.

Counts non-blank, non-comment lines (docstrings count). The kernel is what a reader must hold in
mind to understand a task's life; everything else (built-in components and plugins, the CLI,
the testing kit) sits beside it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "packages" / "qtasks-core" / "src" / "qtasks"
# The brief's kernel (hookspecs, plugin manager, registry, messages, app, worker) plus the
# component Protocols, the run types the hooks receive, the app's calls on submitted tasks (admin)
# and how a run calls its function (calls). Task handles and routers, config,
# errors, built-ins, the CLI and the testing kit sit beside it.
KERNEL = ["hookspecs", "plugins", "registry", "messages", "protocols", "app", "admin", "runs", "calls", "worker"]
KERNEL_CAP = 1_600  # "about 1,500": one sitting
TOTAL_CAP = 3_800  # "around 3,500": within 10%
MODULE_CAP = 350  # physical lines: a module reads in one screenful of scrolling


def lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if not re.match(r"^\s*(#|$)", line))


def main() -> int:
    sizes = {p.relative_to(SRC).as_posix(): lines(p) for p in sorted(SRC.rglob("*.py"))}
    kernel = sum(sizes[f"{name}.py"] for name in KERNEL)
    total = sum(sizes.values())
    physical = {p.relative_to(SRC).as_posix(): len(p.read_text().splitlines()) for p in SRC.rglob("*.py")}
    failures = [f"{name}: {n} lines > {MODULE_CAP}" for name, n in physical.items() if n > MODULE_CAP]
    if kernel > KERNEL_CAP:
        failures.append(f"kernel: {kernel} lines > {KERNEL_CAP}")
    if total > TOTAL_CAP:
        failures.append(f"qtasks-core: {total} lines > {TOTAL_CAP}")
    width = max(map(len, sizes))
    for name, n in sizes.items():
        print(f"  {name:<{width}} {n:>5}{'  (kernel)' if name[:-3] in KERNEL else ''}")
    print(f"kernel {kernel} / {KERNEL_CAP}, qtasks-core {total} / {TOTAL_CAP} (non-blank, non-comment lines)")
    for failure in failures:
        print(f"OVER BUDGET: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
