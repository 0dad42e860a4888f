"""Named registries and strict settings: the one lookup every layer uses.

* ``Registry(kind)``: entries by name; an entry is an object or a lazy ``"module:attr"``
  path imported on first ``get`` (so importing a package stays cheap). ``get`` of an unknown
  name raises one ``UnknownNameError`` listing the known names. ``register`` works as a
  call or a decorator.
* ``check_settings(what, cls, settings)``: ``settings`` must name fields of the dataclass
  ``cls`` with values of the annotated types; otherwise one ``InvalidInputError`` that
  lists every valid field with its type and default (big_vision's ``Evaluator(**cfg)``
  rejecting unknown keys, with types checked too).

A leaf module: it imports nothing from ``ood_jax`` but ``errors``.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from typing import Any, Callable, Iterable, Mapping

from ood_jax.errors import InvalidInputError, UnknownNameError


def resolve(entry: Any) -> Any:
  """``entry`` itself, or the attribute named by a ``"module:attr"`` string."""
  if isinstance(entry, str) and ":" in entry:
    module, attr = entry.split(":", 1)
    return getattr(importlib.import_module(module), attr)
  return entry


class Registry:
  """Entries by name (objects or lazy ``"module:attr"`` paths); see the module docstring."""

  def __init__(self, kind: str, entries: Mapping[str, Any] | None = None):
    self.kind = kind
    self._entries: dict[str, Any] = dict(entries or {})

  def register(self, name: str, entry: Any = None):
    """Adds (or replaces) ``name``; without ``entry`` returns a decorator."""
    if entry is None:
      def deco(obj):
        self._entries[name] = obj
        return obj
      return deco
    self._entries[name] = entry
    return entry

  def unregister(self, name: str) -> None:
    """Removes ``name`` (tests and notebooks that register temporary entries)."""
    self.check(name)
    del self._entries[name]

  def names(self) -> list[str]:
    return sorted(self._entries)

  def __contains__(self, name) -> bool:
    return name in self._entries

  def __iter__(self):
    return iter(self.names())

  def check(self, name: str) -> None:
    """Raises ``UnknownNameError`` listing the known names unless ``name`` is registered."""
    if name not in self._entries:
      raise UnknownNameError(
          f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(self.names())}.")

  def get(self, name: str) -> Any:
    """The entry ``name`` (its module imported on first use)."""
    self.check(name)
    entry = self._entries[name]
    if isinstance(entry, str):
      entry = self._entries[name] = resolve(entry)
    return entry

  def items(self) -> list[tuple[str, Any]]:
    """``(name, entry)`` pairs in registration order (entries imported)."""
    return [(n, self.get(n)) for n in list(self._entries)]

  def lazy_path(self, name: str) -> str | None:
    """The ``"module:attr"`` path of a not-yet-imported entry, else None."""
    self.check(name)
    entry = self._entries[name]
    return entry if isinstance(entry, str) else None


def choose(kind: str, name: str, known: Iterable[str], hint: str = "") -> str:
  """``name`` if it is one of ``known``, else ``UnknownNameError`` listing them (then
  ``hint``, e.g. how to spell an argument)."""
  known = list(known)
  if name not in known:
    raise UnknownNameError(f"unknown {kind} {name!r}; known {kind}s: {', '.join(map(str, known))}."
                           + (f" {hint}" if hint else ""))
  return name


# ----------------------------------------------------------------------------- settings


def _hints(cls) -> dict[str, Any]:
  try:
    return typing.get_type_hints(cls)
  except Exception:  # pylint: disable=broad-except  (an unresolvable annotation: no check)
    return {}


def type_name(tp) -> str:
  """A readable name of an annotation (``int | None``, ``tuple``)."""
  if tp is type(None):
    return "None"
  if isinstance(tp, type):
    return tp.__name__
  origin = typing.get_origin(tp)
  if origin in (typing.Union, types.UnionType):
    return " | ".join(type_name(a) for a in typing.get_args(tp))
  if origin is typing.Literal:
    return " | ".join(repr(a) for a in typing.get_args(tp))
  if origin is not None and isinstance(origin, type):
    return origin.__name__
  return str(tp).replace("typing.", "")


def matches(value: Any, tp) -> bool:
  """Whether ``value`` fits annotation ``tp`` (ints are floats; bools are not numbers)."""
  if tp is Any or tp is typing.Any:
    return True
  if tp is type(None) or tp is None:
    return value is None
  origin = typing.get_origin(tp)
  if origin in (typing.Union, types.UnionType):
    return any(matches(value, a) for a in typing.get_args(tp))
  if origin is typing.Literal:
    return value in typing.get_args(tp)
  if origin is not None:
    if origin is Callable or getattr(origin, "__name__", "") == "Callable":
      return callable(value)
    tp = origin
  if not isinstance(tp, type):
    return True
  if tp is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if tp is int:
    return isinstance(value, int) and not isinstance(value, bool)
  if tp is tuple:
    return isinstance(value, (tuple, list))
  return isinstance(value, tp)


def field_help(cls) -> str:
  """``name: type = default`` of every init field of dataclass ``cls``, one per line."""
  hints = _hints(cls)
  lines = []
  for f in dataclasses.fields(cls):
    if not f.init:
      continue
    if f.default is not dataclasses.MISSING:
      default = repr(f.default)
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
      default = repr(f.default_factory())  # type: ignore[misc]
    else:
      default = "required"
    lines.append(f"  {f.name}: {type_name(hints.get(f.name, f.type))} = {default}")
  return "\n".join(lines)


def check_settings(what: str, cls, settings: Mapping[str, Any],
                   exclude: Iterable[str] = ()) -> dict[str, Any]:
  """``settings`` as a dict, after checking that every key is an init field of dataclass
  ``cls`` (not in ``exclude``) and every value fits its annotation; else one
  ``InvalidInputError`` listing the valid fields (with types and defaults)."""
  exclude = set(exclude)
  fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in exclude}
  hints = _hints(cls)
  unknown = [k for k in settings if k not in fields]
  if unknown:
    raise InvalidInputError(
        f"{what}: unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))};"
        f" valid fields:\n{field_help_of(cls, fields)}")
  for k, v in settings.items():
    tp = hints.get(k)
    if tp is not None and not matches(v, tp):
      raise InvalidInputError(
          f"{what}: field {k!r} takes {type_name(tp)}, got {v!r} ({type(v).__name__});"
          f" valid fields:\n{field_help_of(cls, fields)}")
  return dict(settings)


def field_help_of(cls, fields: Mapping[str, Any]) -> str:
  lines = field_help(cls).splitlines()
  return "\n".join(l for l in lines if l.strip().split(":")[0] in fields)
