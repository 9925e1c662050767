"""The documentation tells the truth: each feature page's example runs, and every hook is listed."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from qtasks import hookspecs

from tests.conftest import ROOT

PAGES = sorted((ROOT / "docs" / "features").glob("*.md"))


def python_blocks(page: Path) -> str:
    return "\n".join(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL))


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_feature_page_example_runs(page: Path) -> None:
    code = python_blocks(page)
    assert code.strip(), f"{page.name} has no example"
    exec(compile(code, str(page), "exec"), {"__name__": f"docs_{page.stem}"})


def test_every_hook_is_in_the_plugin_guide() -> None:
    guide = (ROOT / "docs" / "hooks.md").read_text()
    for name in (n for n in dir(hookspecs) if n.startswith("qtasks_")):
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"`{name}({params})`" in guide, f"{name}({params}) missing from docs/hooks.md"


def test_every_feature_page_is_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for page in PAGES:
        assert f"docs/features/{page.name}" in readme, f"README does not link {page.name}"
