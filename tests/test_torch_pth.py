"""``ood_jax.models.torch_pth``: reading torch.save zips without torch, refusing bad pickles.

The writer below reproduces torch.save's zip layout with stand-in ``torch`` modules that
exist in ``sys.modules`` only while pickling, so the reader cannot depend on them.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import io
import os
import pickle
import sys
import types
import zipfile

import jax
import numpy as np
import pytest

from ood_jax.data import local
from ood_jax.errors import CheckpointError
from ood_jax.models import load_torch_checkpoint, load_weights, torch_weights
from ood_jax.models.torch_pth import read_state_dict

WEIGHTS = local.shared_dir() / "fixtures" / "lr_vae_fmnist" / "weights.npz"
needs_weights = pytest.mark.skipif(
    not WEIGHTS.is_file(), reason=f"{WEIGHTS} absent (no ../shared/fixtures/lr_vae_fmnist)")

_STORAGE_OF = {np.dtype("f4"): "FloatStorage", np.dtype("i8"): "LongStorage",
               np.dtype("u2"): "BFloat16Storage", np.dtype("bool"): "BoolStorage"}


@contextlib.contextmanager
def _fake_torch():
  """Installs stand-in ``torch`` / ``torch._utils`` modules for pickling, then removes them."""
  assert "torch" not in sys.modules, "real torch present; this test expects it absent"
  torch = types.ModuleType("torch")
  utils = types.ModuleType("torch._utils")
  for name in set(_STORAGE_OF.values()):
    setattr(torch, name, type(name, (), {"__module__": "torch"}))

  def _rebuild_tensor_v2(*args):
    raise AssertionError("never called while writing")

  _rebuild_tensor_v2.__module__ = "torch._utils"
  _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
  utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  torch._utils = utils
  sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
  try:
    yield torch, utils
  finally:
    del sys.modules["torch"], sys.modules["torch._utils"]


class _Storage:
  def __init__(self, key: str, flat: np.ndarray):
    self.key, self.flat = key, flat


class _Tensor:
  """Pickles like a torch tensor: ``_rebuild_tensor_v2(storage, offset, size, stride, ...)``."""

  def __init__(self, storage, offset, size, stride, rebuild):
    self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())
    self.rebuild = rebuild

  def __reduce__(self):
    return self.rebuild, self.args


class _Pickler(pickle.Pickler):
  def __init__(self, file, torch):
    super().__init__(file, protocol=2)
    self.torch = torch

  def persistent_id(self, obj):
    if isinstance(obj, _Storage):
      cls = getattr(self.torch, _STORAGE_OF[obj.flat.dtype])
      return ("storage", cls, obj.key, "cuda:0", int(obj.flat.size))
    return None


def _c_strides(shape):
  out, acc = [], 1
  for n in reversed(shape):
    out.append(acc)
    acc *= n
  return tuple(reversed(out))


def _layout(entries):
  """entries: name -> (array, mode) with mode 'C', 'F' (transposed strides) or ('shared', k).

  Returns (storages {key: flat}, tensors {name: (key, offset, size, stride)}).
  """
  storages, tensors, shared = {}, {}, {}
  for name, (a, mode) in entries.items():
    a = np.asarray(a)
    if isinstance(mode, tuple):  # appended to a storage shared with other tensors
      key = f"s{mode[1]}"
      flat = shared.setdefault(key, [np.zeros(3, a.dtype)])  # a gap: offsets are never 0
      tensors[name] = (key, sum(x.size for x in flat), a.shape, _c_strides(a.shape))
      flat.append(a.ravel())
      continue
    key = str(len(storages))
    if mode == "F":
      storages[key] = a.ravel(order="F")
      stride = tuple(int(np.prod(a.shape[:i])) for i in range(a.ndim))
    else:
      storages[key] = a.ravel()
      stride = _c_strides(a.shape)
    tensors[name] = (key, 0, a.shape, stride)
  for key, parts in shared.items():
    storages[key] = np.concatenate(parts)
  return storages, tensors


def write_pth(path, entries, *, byteorder="little", archive="archive", metadata=True):
  """Writes ``entries`` (see ``_layout``) as torch.save would."""
  storages, tensors = _layout(entries)
  with _fake_torch() as (torch, utils):
    objs = {k: _Storage(k, v) for k, v in storages.items()}
    sd = collections.OrderedDict(
        (name, _Tensor(objs[key], off, size, stride, utils._rebuild_tensor_v2))
        for name, (key, off, size, stride) in tensors.items())
    if metadata:
      sd._metadata = collections.OrderedDict([("", {"version": 1}), ("main", {"version": 1})])
    buf = io.BytesIO()
    _Pickler(buf, torch).dump(sd)
  order = ">" if byteorder == "big" else "<"
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr(f"{archive}/data.pkl", buf.getvalue())
    zf.writestr(f"{archive}/byteorder", byteorder)
    for key, flat in storages.items():
      zf.writestr(f"{archive}/data/{key}", flat.astype(flat.dtype.newbyteorder(order)).tobytes())
    zf.writestr(f"{archive}/version", "3\n")
  return path


def _zip_with_pickle(path, payload: bytes, extra=None):
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("archive/data.pkl", payload)
    zf.writestr("archive/version", "3\n")
    for name, data in (extra or {}).items():
      zf.writestr(name, data)
  return path


def test_strided_offset_shared_and_dtypes(tmp_path):
  rng = np.random.default_rng(0)
  w = rng.normal(size=(3, 4, 2, 5)).astype(np.float32)
  m = rng.normal(size=(4, 6)).astype(np.float32)
  b1 = rng.normal(size=(7,)).astype(np.float32)
  b2 = rng.normal(size=(2, 3)).astype(np.float32)
  ids = np.arange(-5, 7, dtype=np.int64).reshape(3, 4) * (1 << 40)
  entries = {"w": (w, "F"), "m": (m, "F"), "b1": (b1, ("shared", 0)), "b2": (b2, ("shared", 0)),
             "ids": (ids, "F"), "n": (np.array(17, np.int64), "C"),
             "mask": (np.array([True, False, True]), "C"), "empty": (np.zeros((0, 3), np.float32), "C")}
  storages, tensors = _layout(entries)
  assert tensors["b1"][1] == 3 and tensors["b2"][1] == 10  # offsets != 0 in one storage
  assert tensors["w"][3] != _c_strides(w.shape)  # non-contiguous
  for byteorder in ("little", "big"):
    path = write_pth(tmp_path / f"{byteorder}.pth", entries, byteorder=byteorder)
    assert "torch" not in sys.modules and "torch._utils" not in sys.modules
    got = read_state_dict(path)
    assert list(got) == list(entries)
    for name, (a, _) in entries.items():
      assert got[name].dtype == a.dtype.newbyteorder("="), name
      assert got[name].shape == a.shape, name
      np.testing.assert_array_equal(got[name], a, err_msg=name)
      assert got[name].flags.c_contiguous and got[name].flags.writeable
    assert got["n"].shape == () and int(got["n"]) == 17


def test_bfloat16_becomes_float32(tmp_path):
  x = np.array([1.0, -2.5, 3.140625, 0.0], np.float32)
  bits = (x.view(np.uint32) >> 16).astype(np.uint16)
  got = read_state_dict(write_pth(tmp_path / "bf16.pth", {"x": (bits, "C")}))
  assert got["x"].dtype == np.float32
  np.testing.assert_array_equal(got["x"], x)


def test_no_metadata_and_root_archive(tmp_path):
  a = np.arange(6, dtype=np.float32).reshape(2, 3)
  got = read_state_dict(write_pth(tmp_path / "x.pth", {"a": (a, "C")}, metadata=False,
                                  archive="netE_pixel"))
  np.testing.assert_array_equal(got["a"], a)


@needs_weights
def test_round_trip_fixture_and_load_weights(tmp_path):
  with np.load(WEIGHTS) as f:
    arrays = {k: f[k] for k in f.files}
  parts = {"netE": {}, "netG": {}}
  for i, (k, v) in enumerate(arrays.items()):
    prefix, name = k.split("/", 1)
    mode = "F" if v.ndim == 4 and i % 2 else (("shared", 0) if v.ndim == 1 else "C")
    parts[prefix][name] = (v, mode)
  path_e = write_pth(tmp_path / "netE.pth", parts["netE"], archive="netE")
  path_g = write_pth(tmp_path / "netG.pth", parts["netG"], archive="netG")

  ref_model, ref_vars = torch_weights.load_reference_vae(WEIGHTS)
  for model, variables in (load_torch_checkpoint(path_e, path_g),
                           load_weights(f"{path_e}, {path_g}"), load_weights(str(WEIGHTS))):
    assert model == ref_model
    assert jax.tree.structure(variables) == jax.tree.structure(ref_vars)
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(ref_vars)):
      assert a.dtype == b.dtype
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  model, _ = load_torch_checkpoint(path_e, path_g, fast_convt_grad=False)
  assert model.fast_convt_grad is False
  with pytest.raises(CheckpointError, match="missing key"):  # E and G swapped
    load_torch_checkpoint(path_g, path_e)


def test_load_weights_bad_specs(tmp_path):
  a = write_pth(tmp_path / "a.pth", {"x": (np.zeros(2, np.float32), "C")})
  (tmp_path / "w.txt").write_text("x")
  for spec, msg in [(f"{a},{a},{a}", "two paths"), (f"{a},", "two paths"),
                    (str(tmp_path / "nope.npz"), "no such file"),
                    (f"{a},{tmp_path / 'nope.pth'}", "no such file"),
                    (str(tmp_path / "w.txt"), "npz"), (str(a), "npz"),
                    (f"{a},{tmp_path / 'w.txt'}", "pth")]:
    with pytest.raises(CheckpointError, match=msg):
      load_weights(spec)


class _Evil:
  def __init__(self, fn, arg):
    self.fn, self.arg = fn, arg

  def __reduce__(self):
    return self.fn, (self.arg,)


@pytest.mark.parametrize("fn, name", [(os.system, "system"), (builtins.eval, "builtins.eval"),
                                      (builtins.exec, "builtins.exec")])
def test_malicious_pickle_refused(tmp_path, fn, name):
  marker = tmp_path / "pwned"
  arg = f"echo pwned > {marker}" if fn is os.system else f"open({str(marker)!r}, 'w')"
  payload = pickle.dumps(collections.OrderedDict(w=_Evil(fn, arg)), protocol=2)
  path = _zip_with_pickle(tmp_path / "evil.pth", payload)
  with pytest.raises(CheckpointError, match=name):
    read_state_dict(path)
  assert not marker.exists()


def test_malicious_subprocess_and_non_mapping_refused(tmp_path):
  import subprocess
  marker = tmp_path / "pwned"
  payload = pickle.dumps({"w": _Evil(subprocess.check_call, ["touch", str(marker)])}, protocol=4)
  with pytest.raises(CheckpointError, match="subprocess.check_call"):
    read_state_dict(_zip_with_pickle(tmp_path / "evil.pth", payload))
  assert not marker.exists()
  with pytest.raises(CheckpointError, match="not a state_dict"):
    read_state_dict(_zip_with_pickle(tmp_path / "list.pth", pickle.dumps([1, 2], protocol=2)))
  with pytest.raises(CheckpointError, match="not a flat state_dict"):
    read_state_dict(_zip_with_pickle(tmp_path / "d.pth", pickle.dumps({"a": 1}, protocol=2)))


def test_unreadable_files(tmp_path):
  rnd = tmp_path / "random.pth"
  rnd.write_bytes(np.random.default_rng(0).bytes(4096))
  legacy = tmp_path / "legacy.pth"
  legacy.write_bytes(pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2) + b"\x00" * 64)
  for path in (rnd, legacy):
    with pytest.raises(CheckpointError, match="not a zip-format torch checkpoint"):
      read_state_dict(path)
  with pytest.raises(CheckpointError, match="no such file"):
    read_state_dict(tmp_path / "missing.pth")
  nopkl = tmp_path / "nopkl.pth"
  with zipfile.ZipFile(nopkl, "w") as zf:
    zf.writestr("archive/version", "3\n")
  with pytest.raises(CheckpointError, match="data.pkl"):
    read_state_dict(nopkl)
  corrupt = _zip_with_pickle(tmp_path / "corrupt.pth", b"\x80\x02}q\x00(X")
  with pytest.raises(CheckpointError, match="corrupt data.pkl"):
    read_state_dict(corrupt)


def test_missing_or_short_storage_record(tmp_path):
  a = np.arange(12, dtype=np.float32).reshape(3, 4)
  good = write_pth(tmp_path / "good.pth", {"a": (a, "C")})
  with zipfile.ZipFile(good) as zf:
    files = {n: zf.read(n) for n in zf.namelist()}
  missing = tmp_path / "missing.pth"
  with zipfile.ZipFile(missing, "w") as zf:
    for n, d in files.items():
      if n != "archive/data/0":
        zf.writestr(n, d)
  with pytest.raises(CheckpointError, match="storage record 'archive/data/0' is missing"):
    read_state_dict(missing)
  short = tmp_path / "short.pth"
  with zipfile.ZipFile(short, "w") as zf:
    for n, d in files.items():
      zf.writestr(n, d[:8] if n == "archive/data/0" else d)
  with pytest.raises(CheckpointError, match="bytes, expected"):
    read_state_dict(short)


# Legacy (torch<1.6) format: the authors' Likelihood-Regret netE_pixel.pth / netG_pixel.pth are
# in it. Five pickles (magic, 1001, sys_info, the object with 6-tuple persistent ids, the
# sorted storage keys), then per storage an int64 element count and the raw bytes.
_LEGACY_HEAD = (0x1950a86a20f9469cfc6c, 1001, {"protocol_version": 1001, "little_endian": True,
                                               "type_sizes": {"short": 2, "int": 4, "long": 8}})


class _LegacyPickler(_Pickler):
  views: dict = {}  # storage key -> (root key, offset, numel): an old-style storage view

  def persistent_id(self, obj):
    pid = super().persistent_id(obj)
    if pid is None:
      return None
    if obj.key in self.views:
      root, off, n = self.views[obj.key]
      return ("storage", pid[1], root, pid[3], off + n + 1, (obj.key, off, n))
    return pid + (None,)


def write_legacy_pth(path, entries, views=None, payload=None):
  """Writes ``entries`` (see ``_layout``) as torch<1.6 did; ``payload``: a raw object pickle."""
  storages, tensors = _layout(entries)
  buf = io.BytesIO()
  for obj in _LEGACY_HEAD:
    pickle.dump(obj, buf, protocol=2)
  with _fake_torch() as (torch, utils):
    objs = {k: _Storage(k, v) for k, v in storages.items()}
    sd = collections.OrderedDict(
        (name, _Tensor(objs[key], off, size, stride, utils._rebuild_tensor_v2))
        for name, (key, off, size, stride) in tensors.items())
    sd._metadata = collections.OrderedDict([("", {"version": 1})])
    pickler = _LegacyPickler(buf, torch)
    pickler.views = views or {}
    if payload is None:
      pickler.dump(sd)
    else:
      buf.write(payload)
  records = {}
  for key, flat in storages.items():
    root, off, _ = pickler.views.get(key, (key, 0, 0))
    full = np.zeros(off + flat.size + 1, flat.dtype) if root != key else flat
    if root != key:
      full[off:off + flat.size] = flat
    records[root] = full
  pickle.dump(sorted(records), buf, protocol=2)
  for key in sorted(records):
    buf.write(np.int64(records[key].size).astype("<i8").tobytes())
    buf.write(records[key].astype(records[key].dtype.newbyteorder("<")).tobytes())
  path.write_bytes(buf.getvalue())
  return path


def test_legacy_format(tmp_path):
  rng = np.random.default_rng(1)
  w = rng.normal(size=(3, 4, 2, 2)).astype(np.float32)
  b = rng.normal(size=(5,)).astype(np.float32)
  v = rng.normal(size=(4,)).astype(np.float32)
  entries = {"w": (w, "F"), "b": (b, ("shared", 0)), "n": (np.array(3, np.int64), "C"),
             "mask": (np.array([True, False]), "C"), "v": (v, "C")}
  path = write_legacy_pth(tmp_path / "old.pth", entries, views={"3": ("root", 2, 4)})
  assert "torch" not in sys.modules and b"root" in path.read_bytes()  # "v" is a storage view
  got = read_state_dict(path)
  assert list(got) == list(entries)
  for name, (a, _) in entries.items():
    assert got[name].dtype == a.dtype and got[name].shape == a.shape, name
    np.testing.assert_array_equal(got[name], a, err_msg=name)
  data = path.read_bytes()
  for cut in (4, len(data) // 2):
    (tmp_path / "cut.pth").write_bytes(data[:-cut])
    with pytest.raises(CheckpointError, match="not a zip-format torch checkpoint"):
      read_state_dict(tmp_path / "cut.pth")


@pytest.mark.parametrize("fn, name", [(os.system, "system"), (builtins.eval, "builtins.eval")])
def test_legacy_and_plain_malicious_pickles_refused(tmp_path, fn, name):
  marker = tmp_path / "pwned"
  arg = f"echo pwned > {marker}" if fn is os.system else f"open({str(marker)!r}, 'w')"
  payload = pickle.dumps(collections.OrderedDict(w=_Evil(fn, arg)), protocol=2)
  legacy = write_legacy_pth(tmp_path / "evil.pth", {}, payload=payload)
  plain = tmp_path / "plain.pth"  # what torch.load(weights_only=False) would run
  plain.write_bytes(payload)
  for path in (legacy, plain):
    with pytest.raises(CheckpointError, match=name):
      read_state_dict(path)
  assert not marker.exists()


@needs_weights
def test_legacy_fixture_round_trip(tmp_path):
  with np.load(WEIGHTS) as f:
    arrays = {k: f[k] for k in f.files}
  parts = {"netE": {}, "netG": {}}
  for k, v in arrays.items():
    prefix, name = k.split("/", 1)
    parts[prefix][name] = (v, "C")
  path_e = write_legacy_pth(tmp_path / "netE_pixel.pth", parts["netE"])
  path_g = write_legacy_pth(tmp_path / "netG_pixel.pth", parts["netG"])
  ref_model, ref_vars = torch_weights.load_reference_vae(WEIGHTS)
  model, variables = load_weights(f"{path_e},{path_g}")
  assert model == ref_model
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(ref_vars), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("offset, size, stride", [(2, (3,), (1,)), (0, (2, 2), (3, 1)),
                                                  (0, (2,), (-1,))])
def test_out_of_bounds_view_refused(tmp_path, offset, size, stride):
  with _fake_torch() as (torch, utils):
    storage = _Storage("0", np.arange(4, dtype=np.float32))
    sd = collections.OrderedDict(x=_Tensor(storage, offset, size, stride, utils._rebuild_tensor_v2))
    buf = io.BytesIO()
    _Pickler(buf, torch).dump(sd)
  extra = {"archive/data/0": storage.flat.tobytes()}
  with pytest.raises(CheckpointError, match="tensor view"):
    read_state_dict(_zip_with_pickle(tmp_path / "oob.pth", buf.getvalue(), extra))
