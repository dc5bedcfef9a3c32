"""Dependencies point one way (jobs -> pipeline -> kontext_core, manifests): importing the
pipeline's commands loads no jobs module, and kontext_core loads no Ray, pipeline or manifests."""

import ast
import subprocess
import sys

from pipeline_helpers import REPO

CHECK = """
import sys
import {modules}
bad = sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r})
print(' '.join(bad))
"""


def _loaded(modules: str, forbidden: tuple[str, ...]) -> str:
    done = subprocess.run([sys.executable, "-c", CHECK.format(modules=modules, forbidden=forbidden)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _imports(package: str) -> list[tuple[str, str]]:
    """(file, module) for every import statement in ``package``, lazy ones inside functions too."""
    found = []
    for path in sorted((REPO / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found += [(str(path.relative_to(REPO)), a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append((str(path.relative_to(REPO)), node.module))
    return found


def test_no_pipeline_or_manifests_module_imports_jobs_even_lazily() -> None:
    upward = [(f, m) for pkg in ("pipeline", "manifests") for f, m in _imports(pkg)
              if m.split(".")[0] == "jobs"]
    assert upward == []


def test_no_kontext_core_module_imports_ray_pipeline_manifests_or_jobs() -> None:
    upward = [(f, m) for f, m in _imports("kontext_core")
              if m.split(".")[0] in ("ray", "pipeline", "manifests", "jobs")]
    assert upward == []


def test_kontext_core_imports_no_ray_pipeline_or_manifests() -> None:
    assert _loaded("kontext_core, kontext_core.quant.load, kontext_core.lora",
                   ("ray", "pipeline", "manifests", "jobs")) == ""
