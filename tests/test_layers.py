"""The package layers import only downward: data -> models -> train -> scores -> experiments
(``errors``, ``registry``, ``metrics`` and ``fid`` are leaves every layer may use)."""

from __future__ import annotations

import ast
import pathlib

import ood_jax

ORDER = ["data", "models", "train", "scores", "experiments"]
LEAVES = {"errors", "registry", "metrics", "fid"}
ROOT = pathlib.Path(ood_jax.__file__).parent


def _imports(path: pathlib.Path) -> set[str]:
  """First component under ``ood_jax`` of every ``ood_jax.*`` import in ``path``."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    for n in names:
      parts = n.split(".")
      if parts[0] == "ood_jax" and len(parts) > 1:
        out.add(parts[1])
  return out


def test_layers_import_only_downward():
  bad = []
  for i, layer in enumerate(ORDER):
    allowed = set(ORDER[:i + 1]) | LEAVES
    for path in (ROOT / layer).rglob("*.py"):
      for used in _imports(path) - allowed:
        bad.append(f"{path.relative_to(ROOT)} imports ood_jax.{used}")
  for leaf in LEAVES:
    for used in _imports(ROOT / f"{leaf}.py") - {"errors"}:
      bad.append(f"{leaf}.py (a leaf) imports ood_jax.{used}")
  assert not bad, "\n".join(bad)
