"""Settings given on the command line: ``key=value`` lists whose values are Python literals.

    --model-args mask=cycle,bottleneck=50,ngf=64        -> {'mask': 'cycle', 'bottleneck': 50, 'ngf': 64}
    --score-args rose.fisher=diag,likelihood_ratio.mu=0.1
                                                        -> {'rose': {'fisher': 'diag'}, 'likelihood_ratio': {'mu': 0.1}}
    --train-args optimizer=rmsprop,lr=5e-5,decay_steps=(80000,90000)

A value is read with ``ast.literal_eval`` (numbers, ``True``/``False``/``None``, quoted
strings, tuples, lists, dicts); anything else is the bare string (``cycle``). Commas inside
brackets or quotes belong to the value. Checking the keys against a model, score or
``TrainConfig`` is the caller's (``ood_jax.registry.check_settings``).
"""

from __future__ import annotations

import ast
import re
from typing import Any, Iterable

from ood_jax.errors import InvalidInputError

# Short names accepted in --train-args (the papers' and torch's spelling).
TRAIN_ALIASES = {"lr": "learning_rate", "optim": "optimizer", "steps": "num_steps"}


def split_top_level(text: str, sep: str = ",") -> list[str]:
  """``text`` split at ``sep`` outside brackets and quotes; empty items dropped."""
  items, depth, quote, cur = [], 0, None, []
  for ch in text or "":
    if quote:
      quote = None if ch == quote else quote
    elif ch in "'\"":
      quote = ch
    elif ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    elif ch == sep and depth == 0:
      items.append("".join(cur))
      cur = []
      continue
    cur.append(ch)
  if quote or depth:
    raise InvalidInputError(f"cannot read {text!r}: unbalanced brackets or quotes.")
  items.append("".join(cur))
  return [i.strip() for i in items if i.strip()]


def literal(text: str) -> Any:
  """A Python literal, else the stripped string."""
  text = text.strip()
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_pairs(text: str | None, flag: str) -> dict[str, Any]:
  """``'a=1,b=x'`` -> ``{'a': 1, 'b': 'x'}``; a key given twice or an item without ``=`` is
  an ``InvalidInputError`` naming ``flag``."""
  out: dict[str, Any] = {}
  for item in split_top_level(text or ""):
    key, eq, value = item.partition("=")
    key = key.strip()
    if not eq or not key:
      raise InvalidInputError(f"{flag}: expected key=value items separated by commas, got {item!r}.")
    if key in out:
      raise InvalidInputError(f"{flag}: {key!r} is given twice.")
    out[key] = literal(value)
  return out


def parse_scoped(text: str | None, flag: str, scopes: Iterable[str],
                 what: str) -> dict[str, dict[str, Any]]:
  """``'rose.fisher=diag,nll.k=4'`` -> ``{'rose': {'fisher': 'diag'}, 'nll': {'k': 4}}``.

  Every key must be ``<scope>.<field>`` with ``scope`` one of ``scopes`` (the run's models or
  scores, named ``what``); a bare ``field`` applies to every scope and is stored under
  ``'*'``."""
  scopes = list(scopes)
  out: dict[str, dict[str, Any]] = {}
  for key, value in parse_pairs(text, flag).items():
    scope, dot, field = key.rpartition(".")
    if not dot:
      scope = "*"
    elif scope not in scopes:
      raise InvalidInputError(
          f"{flag}: {key!r} names {what} {scope!r}, which this run does not use; its {what}s:"
          f" {', '.join(scopes)}.")
    out.setdefault(scope, {})[field] = value
  return out


def train_pairs(text: str | None) -> dict[str, Any]:
  """``--train-args`` with the short names of ``TRAIN_ALIASES`` spelled out."""
  out: dict[str, Any] = {}
  for key, value in parse_pairs(text, "--train-args").items():
    full = TRAIN_ALIASES.get(key, key)
    if full in out:
      raise InvalidInputError(f"--train-args: {full!r} is given twice ({key!r}).")
    out[full] = value
  return out


def render(settings: dict) -> str:
  """``{'a': 1, 'b': 'x'}`` -> ``'a=1,b=x'`` (sorted keys; the inverse of ``parse_pairs``)."""
  def val(v):
    return v if isinstance(v, str) and v.isidentifier() else repr(v)
  return ",".join(f"{k}={val(v)}" for k, v in sorted(settings.items()))


def parse_entry(entry: str) -> tuple[str, dict[str, Any]]:
  """A score entry ``'rose[fisher=diag,n_fisher=100]'`` -> ``('rose', {'fisher': 'diag',
  'n_fisher': 100})``: a name with inline settings (``--scores`` of every experiment)."""
  m = re.fullmatch(r"\s*([A-Za-z_]\w*)\s*(?:\[(.*)\])?\s*", entry or "")
  if not m:
    raise InvalidInputError(f"cannot read score entry {entry!r}; expected name or "
                            "name[field=value,...].")
  return m.group(1), parse_pairs(m.group(2) or "", f"score entry {entry!r}")
