"""``ood_jax.registry``: lazy entries, unknown names, strict settings."""

from __future__ import annotations

import dataclasses

import pytest

from ood_jax.errors import InvalidInputError, UnknownNameError
from ood_jax.registry import Registry, check_settings, choose, field_help


def test_lazy_entries_import_on_first_get():
  r = Registry("thing", {"json_dumps": "json:dumps", "two": 2})
  assert r.lazy_path("json_dumps") == "json:dumps"
  import json
  assert r.get("json_dumps") is json.dumps and r.lazy_path("json_dumps") is None
  assert r.names() == ["json_dumps", "two"] and "two" in r
  @r.register("three")
  def three():
    return 3
  assert r.get("three") is three and [n for n, _ in r.items()] == ["json_dumps", "two", "three"]
  r.unregister("three")
  with pytest.raises(UnknownNameError, match=r"unknown thing 'three'; known things: json_dumps, two"):
    r.get("three")
  with pytest.raises(UnknownNameError, match="known colours: red, blue"):
    choose("colour", "green", ["red", "blue"])


@dataclasses.dataclass(frozen=True)
class Cfg:
  n: int = 1
  lr: float = 1e-3
  name: str = "a"
  opt: int | None = None
  steps: tuple[int, ...] | None = None
  flag: bool = False


@pytest.mark.parametrize("settings", [
    {"n": 3}, {"lr": 1}, {"lr": 0.5}, {"opt": None}, {"opt": 4}, {"steps": (1, 2)},
    {"steps": [1, 2]}, {"flag": True}, {}])
def test_good_settings_pass(settings):
  assert check_settings("cfg", Cfg, settings) == settings


@pytest.mark.parametrize("settings, message", [
    ({"m": 3}, "unknown field 'm'"), ({"n": 1.5}, "field 'n' takes int"),
    ({"n": True}, "field 'n' takes int"), ({"lr": "x"}, "field 'lr' takes float"),
    ({"flag": 1}, "field 'flag' takes bool"), ({"opt": "x"}, "int | None"),
    ({"steps": 3}, "field 'steps'")])
def test_bad_settings_name_the_valid_fields(settings, message):
  with pytest.raises(InvalidInputError) as e:
    check_settings("cfg", Cfg, settings)
  assert message in str(e.value)
  for f in ("n: int = 1", "lr: float = 0.001", "steps: tuple | None = None"):
    assert f in str(e.value)


def test_excluded_fields_are_not_settings():
  with pytest.raises(InvalidInputError, match="unknown field 'name'"):
    check_settings("cfg", Cfg, {"name": "b"}, exclude=("name",))
  assert "name: str = 'a'" in field_help(Cfg)
