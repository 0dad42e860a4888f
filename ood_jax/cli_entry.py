"""The ``ood-jax`` console script (``[project.scripts]`` in ``pyproject.toml``).

    ood-jax                              # the catalogue (also: ood-jax --help | -h | list)
    ood-jax table2 --preset smoke        # = python -m ood_jax.experiments.table2 --preset smoke
    ood-jax reproduce --preset smoke     # = python -m ood_jax.experiments.reproduce ...
    ood-jax song_table2 --preset smoke   # a catalogue entry: its module with the entry's flags

``ood-jax <experiment> [flags]`` runs ``ood_jax.experiments.<experiment>.main(flags)``, exactly
what ``python -m ood_jax.experiments.<experiment> [flags]`` runs. ``<experiment>`` is a module
the catalogue lists (``ood_jax.experiments.catalogue``), ``reproduce`` or ``combine``; a
catalogue entry name (``song_table2``, ``rose_table2``, ...) runs its module with the entry's
default flags first, so flags given after it win (argparse: the last value counts).
An unknown name is one ``error: ...`` line, exit 2.
"""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

from ood_jax.experiments import catalogue

PROG = "ood-jax"
# Runnable modules of ood_jax.experiments that are not catalogue entries.
EXTRA_MODULES = ("reproduce", "combine")
LISTING_FLAGS = ("-h", "--help", "help", "list")


def known() -> dict[str, tuple[str, tuple[str, ...]]]:
  """``{name: (module, leading flags)}`` of every name ``ood-jax <name>`` runs: each module the
  catalogue lists and ``reproduce``/``combine`` (no leading flags), then each catalogue entry
  name that is not a module name (its module and the entry's default flags). A module name
  means the module itself, as ``python -m`` does."""
  modules = sorted({e.module for e in catalogue.entries()} | set(EXTRA_MODULES))
  names = {m: (m, ()) for m in modules}
  for e in catalogue.entries():
    names.setdefault(e.name, (e.module, tuple(e.args)))
  return names


def _modules() -> list[str]:
  return [n for n, (m, lead) in known().items() if n == m and not lead]


def _aliases() -> list[str]:
  return [n for n in known() if n not in _modules()]


def usage() -> str:
  from ood_jax.experiments.__main__ import listing  # noqa: PLC0415  (only when listing)
  return (f"usage: {PROG} <experiment> [flags]   (= python -m ood_jax.experiments.<experiment>"
          f" [flags]; {PROG} <experiment> --help lists the flags)\n"
          f"experiments: {', '.join(_modules())}\n\n{listing()}")


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in LISTING_FLAGS:
    print(usage())
    return 0
  name, rest = argv[0], argv[1:]
  names = known()
  if name not in names:
    print(f"error: unknown experiment {name!r}; known: {', '.join(_modules())} "
          f"(or a catalogue entry: {', '.join(_aliases())}; '{PROG}' lists them)",
          file=sys.stderr)
    return 2
  module, lead = names[name]
  main_fn = importlib.import_module(f"ood_jax.experiments.{module}").main
  saved = sys.argv
  sys.argv = [f"{PROG} {name}", *rest]     # what python -m would show, for code reading argv[0]
  try:
    code = main_fn([*lead, *rest])
  except SystemExit as e:                  # reproduce's argparse exits on --help / bad flags
    code = e.code
  finally:
    sys.argv = saved
  if code is None:
    return 0
  return code if isinstance(code, int) else 1


if __name__ == "__main__":
  sys.exit(main())
