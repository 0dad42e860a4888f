"""``python -m ood_jax.experiments``: the catalogue of experiments and their commands."""

from __future__ import annotations

import sys

from ood_jax.experiments import catalogue


def listing() -> str:
  lines = ["Experiments (python -m ood_jax.experiments.reproduce --preset smoke|cpu|paper "
           "[--only PAPER] runs them all):", ""]
  for key, title in catalogue.PAPERS.items():
    es = catalogue.entries(key)
    lines.append(f"{key}: {title}" + ("" if es else "  (nothing registered yet)"))
    for e in es:
      lines.append(f"  {e.name:<22} {e.item:<24} {e.about}")
      lines.append(f"  {'':<22} {e.command}")
    lines.append("")
  lines.append("Every command takes --preset smoke|cpu|paper, --out, --model-args, --score-args, "
               "--train-args, ... (--help).")
  return "\n".join(lines)


def main() -> int:
  print(listing())
  return 0


if __name__ == "__main__":
  sys.exit(main())
