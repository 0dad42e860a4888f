"""Run every catalogued experiment into one directory, resumably, with an index.

    python -m ood_jax.experiments.reproduce --preset smoke            # everything, smoke preset
    python -m ood_jax.experiments.reproduce --preset cpu --only song  # one paper

Each catalogue entry (``python -m ood_jax.experiments`` lists them) runs its default command
with ``--preset``, ``--out <out>/<entry>`` and one shared checkpoint cache
``<out>/checkpoints`` (so models trained for one table are reused by the next), plus
``--data-dir``, ``--seed`` and ``--no-progress`` when given. An entry that finished is
recorded in ``<out>/done.json`` (written atomically) with its command and skipped by a rerun
of the same command (another ``--seed`` or ``--data-dir`` runs it again); a killed run
resumes at the entry it was in (whose training resumes from its checkpoints). An entry
that fails (bad data, a bug) is recorded as failed with the error and the others still
run; the exit status is then 1.
``<out>/index.md`` links each entry's report with its wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

from ood_jax.errors import InvalidInputError, OODJaxError
from ood_jax.experiments import catalogue, configs

DONE = "done.json"


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m ood_jax.experiments.reproduce",
                              description=__doc__.split("\n\n")[0])
  p.add_argument("--preset", default="cpu", help=f"one of {', '.join(configs.PRESETS)} (default cpu)")
  p.add_argument("--only", default=None,
                 help=f"comma-separated papers ({', '.join(catalogue.PAPERS)}) or entry names")
  p.add_argument("--out", default=None, help="output directory (default runs/reproduce_<preset>)")
  p.add_argument("--data-dir", default=None)
  p.add_argument("--seed", type=int, default=None)
  p.add_argument("--no-progress", action="store_true")
  return p.parse_args(argv)


def select(only: str | None) -> list[catalogue.Entry]:
  """The entries named by ``--only`` (papers or entry names), in catalogue order."""
  every = catalogue.entries()
  if not only:
    return every
  wanted = [w.strip() for w in only.split(",") if w.strip()]
  names = {e.name for e in every}
  for w in wanted:
    if w not in catalogue.PAPERS and w not in names:
      raise InvalidInputError(f"--only: {w!r} is neither a paper ({', '.join(catalogue.PAPERS)})"
                              f" nor a catalogue entry ({', '.join(sorted(names))}).")
  chosen = [e for e in every if e.paper in wanted or e.name in wanted]
  if not chosen:
    raise InvalidInputError(f"--only {only!r}: nothing is registered for it yet.")
  return chosen


def entry_argv(entry: catalogue.Entry, args: argparse.Namespace, out: str) -> list[str]:
  argv = list(entry.args) + ["--preset", args.preset, "--out", os.path.join(out, entry.name),
                             "--ckpt-dir", os.path.join(out, "checkpoints")]
  if args.data_dir:
    argv += ["--data-dir", args.data_dir]
  if args.seed is not None:
    argv += ["--seed", str(args.seed)]
  if args.no_progress:
    argv.append("--no-progress")
  return argv


def _load_done(out: str) -> dict:
  path = os.path.join(out, DONE)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _save_json(path: str, obj) -> None:
  with open(path + ".tmp", "w") as f:
    json.dump(obj, f, indent=1)
  os.replace(path + ".tmp", path)


def _write_index(out: str, text: str) -> None:
  with open(os.path.join(out, "index.md.tmp"), "w") as f:
    f.write(text)
  os.replace(os.path.join(out, "index.md.tmp"), os.path.join(out, "index.md"))


def index_markdown(preset: str, chosen: list[catalogue.Entry], done: dict) -> str:
  lines = [f"# Reproduction, {preset} preset", "",
           "| entry | paper | item | status | wall (s) | report |", "|---|---|---|---|---:|---|"]
  for e in chosen:
    d = done.get(e.name, {})
    status = d.get("status", "not run")
    wall = f"{d['wall_seconds']:.0f}" if "wall_seconds" in d else "–"
    link = f"[{e.name}/report.md]({e.name}/report.md)" if status == "done" else "–"
    lines.append(f"| {e.name} | {e.paper} | {e.item} | {status} | {wall} | {link} |")
  failed = [(n, d) for n, d in done.items() if d.get("status") == "failed"]
  if failed:
    lines += ["", "Failures:", ""] + [f"- {n}: {d.get('error', '')}" for n, d in failed]
  lines += ["", "Commands:", ""] + [f"- {e.name}: `{done.get(e.name, {}).get('command', e.command)}`"
                                   for e in chosen]
  return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
  configs.get_preset(args.preset)
  chosen = select(args.only)
  experiments = {e.name: e.experiment() for e in chosen}
  out = args.out or os.path.join("runs", f"reproduce_{args.preset}")
  # Every entry's flags are checked before anything runs.
  for e in chosen:
    experiments[e.name].make_run(entry_argv(e, args, out))
  os.makedirs(out, exist_ok=True)
  done = _load_done(out)
  status = 0
  for e in chosen:
    argv = entry_argv(e, args, out)
    prev = done.get(e.name, {})
    command = f"python -m ood_jax.experiments.{e.module} " + " ".join(argv)
    if (prev.get("status") == "done" and prev.get("command") == command
        and os.path.exists(os.path.join(out, e.name, "report.md"))):
      print(f"[reproduce] {e.name}: done before, skipped")
      continue
    print(f"[reproduce] {e.name}: {e.command} ...", flush=True)
    t0 = time.perf_counter()
    try:
      experiments[e.name].execute(experiments[e.name].make_run(argv))
      done[e.name] = {"status": "done", "wall_seconds": round(time.perf_counter() - t0, 1),
                      "command": command}
    except Exception as err:  # pylint: disable=broad-except  (recorded; the others still run)
      done[e.name] = {"status": "failed", "wall_seconds": round(time.perf_counter() - t0, 1),
                      "command": command, "error": f"{type(err).__name__}: {err}"}
      print(f"[reproduce] {e.name} failed:", file=sys.stderr)
      traceback.print_exc()
      status = 1
    _save_json(os.path.join(out, DONE), done)
    _write_index(out, index_markdown(args.preset, chosen, done))
  _write_index(out, index_markdown(args.preset, chosen, done))
  print(f"wrote {os.path.join(out, 'index.md')}")
  return status


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    return run(args)
  except OODJaxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
