"""Real installed distributions for discovery tests: a dist-info directory on sys.path."""

from __future__ import annotations

import importlib
from pathlib import Path


def install_distribution(
    site: Path, name: str, version: str, entry_points: dict[str, str], modules: dict[str, str]
) -> Path:
    """Write ``name-version.dist-info`` with ``qtasks`` entry points and the given modules into
    ``site``; put ``site`` on ``sys.path`` (or PYTHONPATH) and it is an installed distribution."""
    site.mkdir(parents=True, exist_ok=True)
    dist_info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "\n".join(f"{ep} = {target}" for ep, target in entry_points.items())
    (dist_info / "entry_points.txt").write_text(f"[qtasks]\n{lines}\n")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(source)
    importlib.invalidate_caches()
    return site
