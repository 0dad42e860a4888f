"""Read ``torch.save`` state_dicts (``.pth``) without PyTorch and without unsafe unpickling.

Two layouts are read:

* zip (torch>=1.6): ``<archive>/data.pkl`` (the pickle), ``<archive>/data/<key>`` (raw
  storages), ``<archive>/byteorder`` (``little``/``big``, optional), ``<archive>/version``.
* legacy (torch<1.6, e.g. the Likelihood-Regret ``netE_pixel.pth``/``netG_pixel.pth``): five
  pickles back to back (magic number, protocol 1001, sys_info, the object, the sorted storage
  keys), then per key an int64 element count and the raw bytes.

The pickle goes through :class:`_RestrictedUnpickler`, whose ``find_class`` knows only
``collections.OrderedDict``, the ``torch._utils._rebuild_*`` tensor/parameter functions (our
own numpy versions) and the ``torch.*Storage`` types (dtype markers). Any other global is
refused with :class:`CheckpointError` before anything is called. Every object handed to the
pickle is immutable, so ``BUILD`` cannot alter this module's state. Tensor views
(offset, size, stride) are bounds-checked against their storage before ``as_strided``.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import os
import pickle
import zipfile
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np

from ood_jax.errors import CheckpointError
from ood_jax.models import torch_weights
from ood_jax.models.vae import ConvVAE

_BAD_FORMAT = ("not a zip-format torch checkpoint (.pth) nor a legacy torch<1.6 one; re-save"
               " with torch>=1.6 or convert to npz")
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001
# torch storage type -> dtype of its bytes on disk (bfloat16: raw uint16, widened on read).
_STORAGE_DTYPES = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "BFloat16Storage": "u2",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "u1", "ComplexFloatStorage": "c8",
    "ComplexDoubleStorage": "c16", "UntypedStorage": "u1",
}


class _Refused(CheckpointError):
  """A pickle global outside ``_ALLOWED``."""


class _StorageType(NamedTuple):
  """Stands in for ``torch.<name>``: only its on-disk dtype is used."""
  name: str
  dtype: str


class _StorageRef(NamedTuple):
  """A storage from a persistent id: ``numel`` elements of ``key`` starting at ``start``."""
  key: str
  stype: _StorageType
  start: int
  numel: int


class _LazyTensor(NamedTuple):
  """A tensor view, materialised once the storages' bytes are read."""
  storage: _StorageRef
  offset: int
  size: tuple
  stride: tuple


class _Global:
  """An allowed global: calls ``fn``; immune to ``BUILD`` (no ``__dict__``, no setattr)."""
  __slots__ = ("_fn",)

  def __init__(self, fn: Callable):
    object.__setattr__(self, "_fn", fn)

  def __setattr__(self, name, value):
    raise CheckpointError("the pickle tries to modify an allowed global")

  def __setstate__(self, state):
    raise CheckpointError("the pickle tries to modify an allowed global")

  def __call__(self, *args, **kwargs):
    return self._fn(*args, **kwargs)


def _is_int(x: Any) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _rebuild_tensor(storage, storage_offset, size, stride) -> _LazyTensor:
  """``torch._utils._rebuild_tensor``: validates the view, reads nothing yet."""
  if not isinstance(storage, _StorageRef):
    raise CheckpointError(f"tensor rebuilt from a {type(storage).__name__}, not a storage")
  size, stride = tuple(size), tuple(stride)
  if (not _is_int(storage_offset) or storage_offset < 0 or len(size) != len(stride)
      or not all(_is_int(v) and v >= 0 for v in size + stride)):
    raise CheckpointError(f"bad tensor view: offset={storage_offset!r}, size={size!r},"
                          f" stride={stride!r}")
  if all(size):
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.numel:
      raise CheckpointError(
          f"tensor view (offset={storage_offset}, size={size}, stride={stride}) reaches"
          f" element {last} of storage {storage.key!r}, which has {storage.numel}")
  return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None) -> _LazyTensor:
  del requires_grad, backward_hooks, metadata
  return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
  del requires_grad, backward_hooks, state
  if not isinstance(data, _LazyTensor):
    raise CheckpointError(f"parameter rebuilt from a {type(data).__name__}, not a tensor")
  return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _Global(_rebuild_tensor),
    ("torch._utils", "_rebuild_tensor_v2"): _Global(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_parameter"): _Global(_rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): _Global(_rebuild_parameter),
    **{("torch", name): _StorageType(name, dt) for name, dt in _STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only the globals in ``_ALLOWED``; storages via ``persistent_load``."""

  def __init__(self, file, persistent_load: Callable[[Any], Any] | None = None):
    super().__init__(file)
    self._persistent_load = persistent_load

  def find_class(self, module: str, name: str):
    # Protocol <= 2 pickles spell Python 2 names (``__builtin__``); report Python 3's.
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    allowed = _ALLOWED.get((module, name))
    if allowed is None:
      raise _Refused(
          f"refusing global {module}.{name}: only tensors, storages and OrderedDict are"
          " allowed in a state_dict (the file may be malicious)")
    return allowed

  def persistent_load(self, pid):
    if self._persistent_load is None:
      raise CheckpointError(f"unexpected persistent id {pid!r}")
    return self._persistent_load(pid)


def _unpickle(f, persistent_load: Callable[[Any], Any] | None = None,
              what: str = "pickle") -> Any:
  try:
    return _RestrictedUnpickler(f, persistent_load).load()
  except CheckpointError:
    raise
  except Exception as e:  # corrupt pickles raise anything: one message for all of them.
    raise CheckpointError(f"corrupt {what} ({type(e).__name__}: {e})") from e


class _Storages:
  """Collects the storages named by persistent ids: key -> (type, element count)."""

  def __init__(self, legacy: bool):
    self.legacy = legacy
    self.roots: dict[str, tuple[_StorageType, int]] = {}
    self.views: dict[str, _StorageRef] = {}

  def __call__(self, pid) -> _StorageRef:
    n = 6 if self.legacy else 5
    if not (isinstance(pid, tuple) and len(pid) == n and pid[0] == "storage"):
      raise CheckpointError(f"unexpected persistent id {pid!r}")
    stype, key, numel = pid[1], pid[2], pid[4]
    if not isinstance(stype, _StorageType) or not isinstance(key, str) or not _is_int(numel) \
        or numel < 0:
      raise CheckpointError(f"bad storage record {pid!r}")
    if self.roots.setdefault(key, (stype, numel)) != (stype, numel):
      raise CheckpointError(f"storage {key!r} is declared twice with different types/sizes")
    view = pid[5] if self.legacy else None
    if view is None:
      return _StorageRef(key, stype, 0, numel)
    if not (isinstance(view, tuple) and len(view) == 3 and isinstance(view[0], str)
            and _is_int(view[1]) and _is_int(view[2]) and view[1] >= 0 and view[2] >= 0
            and view[1] + view[2] <= numel):
      raise CheckpointError(f"bad storage view {view!r} of storage {key!r} ({numel} elements)")
    return self.views.setdefault(view[0], _StorageRef(key, stype, view[1], view[2]))


def _flat(raw: bytes | memoryview, stype: _StorageType, numel: int, little: bool) -> np.ndarray:
  """Raw storage bytes -> 1-D native array (bool as bool, bfloat16 widened to float32)."""
  dt = np.dtype(stype.dtype).newbyteorder("<" if little else ">")
  a = np.frombuffer(raw, dtype=dt, count=numel).astype(dt.newbyteorder("="))
  if stype.name == "BoolStorage":
    return a != 0
  if stype.name == "BFloat16Storage":
    return (a.astype(np.uint32) << 16).view(np.float32)
  return a


def _read_zip(path: str) -> tuple[Any, _Storages, dict[str, np.ndarray]]:
  with zipfile.ZipFile(path) as z:
    names = set(z.namelist())
    pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") <= 1
           and n.rsplit("/", 1)[-1] == "data.pkl"]
    if len(pkl) != 1:
      raise CheckpointError(f"zip holds {len(pkl)} '<archive>/data.pkl' records, expected 1;"
                            f" {_BAD_FORMAT}")
    prefix = pkl[0][:-len("data.pkl")]
    little = True
    if prefix + "byteorder" in names:
      order = z.read(prefix + "byteorder").decode("ascii", "replace").strip()
      if order not in ("little", "big"):
        raise CheckpointError(f"unknown byteorder {order!r}")
      little = order == "little"
    storages = _Storages(legacy=False)
    obj = _unpickle(io.BytesIO(z.read(pkl[0])), storages, what="data.pkl")
    flats = {}
    for key, (stype, numel) in storages.roots.items():
      rec = f"{prefix}data/{key}"
      if rec not in names:
        raise CheckpointError(f"storage record {rec!r} is missing")
      nbytes = numel * np.dtype(stype.dtype).itemsize
      if z.getinfo(rec).file_size < nbytes:
        raise CheckpointError(f"storage record {rec!r} holds {z.getinfo(rec).file_size} bytes,"
                              f" expected {nbytes}")
      with z.open(rec) as f:
        flats[key] = _flat(f.read(nbytes), stype, numel, little)
  return obj, storages, flats


def _read_legacy(buf: bytes) -> tuple[Any, _Storages, dict[str, np.ndarray]]:
  f = io.BytesIO(buf)
  protocol, sys_info = _unpickle(f), _unpickle(f)
  if protocol != _LEGACY_PROTOCOL:
    raise CheckpointError(f"legacy torch checkpoint with protocol {protocol!r}, expected 1001")
  little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
  storages = _Storages(legacy=True)
  obj = _unpickle(f, storages)
  keys = _unpickle(f)
  if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
    raise CheckpointError("legacy torch checkpoint: bad storage key list")
  flats, pos = {}, f.tell()
  for key in keys:
    if key not in storages.roots:
      raise CheckpointError(f"storage {key!r} is listed but no tensor uses it")
    stype, numel = storages.roots[key]
    nbytes = numel * np.dtype(stype.dtype).itemsize
    if pos + 8 + nbytes > len(buf):
      raise CheckpointError(f"storage record {key!r} is missing (file truncated)")
    stored = int.from_bytes(buf[pos:pos + 8], "little" if little else "big", signed=True)
    if stored != numel:
      raise CheckpointError(f"storage {key!r} holds {stored} elements, the pickle says {numel}")
    flats[key] = _flat(memoryview(buf)[pos + 8:pos + 8 + nbytes], stype, numel, little)
    pos += 8 + nbytes
  missing = sorted(set(storages.roots) - set(flats))
  if missing:
    raise CheckpointError(f"storage record(s) {missing[:5]} are missing")
  return obj, storages, flats


def _materialize(t: _LazyTensor, flats: Mapping[str, np.ndarray]) -> np.ndarray:
  ref = t.storage
  flat = flats[ref.key][ref.start:ref.start + ref.numel]
  if not all(t.size):
    return np.zeros(t.size, flat.dtype)
  view = np.lib.stride_tricks.as_strided(
      flat[t.offset:], shape=t.size, strides=tuple(s * flat.itemsize for s in t.stride),
      writeable=False)
  return np.array(view, order="C")  # a C-contiguous, writeable copy


def _read_non_zip(buf: bytes) -> tuple[Any, dict[str, np.ndarray]]:
  """A legacy checkpoint, else ``_BAD_FORMAT`` (or the refusal, for a malicious pickle)."""
  end = buf.find(b".") + 1 if buf[:2] == b"\x80\x02" else 0
  try:
    magic = _unpickle(io.BytesIO(buf[:end])) if end else None
  except CheckpointError:
    magic = None
  if magic != _LEGACY_MAGIC:
    try:
      _unpickle(io.BytesIO(buf))  # a plain pickle: name a refused global, if any.
    except _Refused:
      raise
    except CheckpointError:
      pass
    raise CheckpointError(_BAD_FORMAT)
  try:
    obj, _, flats = _read_legacy(buf[end:])
  except _Refused:
    raise
  except CheckpointError as e:
    raise CheckpointError(f"{e}; {_BAD_FORMAT}") from e
  return obj, flats


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a ``torch.save``'d state_dict -> ``{name: np.ndarray}`` (storage dtypes kept).

  Accepts the zip format and the legacy (torch<1.6) one, CPU or CUDA tensors, and a dict
  wrapping the state_dict under ``'state_dict'``. Raises ``CheckpointError`` for unreadable,
  corrupt or non-torch files, a refused pickle global, or a value that is not a tensor.
  """
  path = os.fspath(path)
  try:
    if not os.path.exists(path):
      raise CheckpointError("no such file")
    if zipfile.is_zipfile(path):
      obj, _, flats = _read_zip(path)
    else:
      with open(path, "rb") as f:
        buf = f.read()
      obj, flats = _read_non_zip(buf)
  except CheckpointError as e:
    raise CheckpointError(f"cannot read torch checkpoint {path!r}: {e}") from e
  except (OSError, zipfile.BadZipFile, EOFError) as e:
    raise CheckpointError(f"cannot read torch checkpoint {path!r}: {e}") from e
  if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
    obj = obj["state_dict"]
  if not isinstance(obj, Mapping):
    raise CheckpointError(f"{path!r} holds a {type(obj).__name__}, not a state_dict")
  bad = [repr(k) for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, _LazyTensor))]
  if bad:
    raise CheckpointError(f"{path!r} is not a flat state_dict (name -> tensor); entries that"
                          f" are not tensors: {', '.join(bad[:8])}")
  return {k: _materialize(v, flats) for k, v in obj.items()}


def load_torch_checkpoint(path_E: str | os.PathLike, path_G: str | os.PathLike,
                          fast_convt_grad: bool = True) -> tuple[ConvVAE, dict]:
  """The reference VAE from its two PyTorch checkpoints -> ``(ConvVAE, variables)``.

  ``path_E``/``path_G``: the encoder (``netE``) and decoder (``netG``) state_dicts.
  """
  arrays: dict[str, np.ndarray] = {}
  for prefix, path in (("netE/", path_E), ("netG/", path_G)):
    arrays.update({prefix + k: v for k, v in read_state_dict(path).items()})
  return torch_weights.vae_from_torch_arrays(
      arrays, where=f"{os.fspath(path_E)}, {os.fspath(path_G)}", fast_convt_grad=fast_convt_grad)


def load_weights(spec: str | os.PathLike, fast_convt_grad: bool = True
                 ) -> tuple[ConvVAE, dict]:
  """``"netE.pth,netG.pth"`` (encoder first) or one ``weights.npz`` -> ``(ConvVAE, variables)``.

  The npz uses the fixture's layout (keys prefixed ``netE/`` and ``netG/``).
  """
  spec = os.fspath(spec)
  parts = [p.strip() for p in spec.split(",")]
  if len(parts) != 1 and (len(parts) != 2 or not all(parts)):
    raise CheckpointError(f"weights spec {spec!r}: expected two paths 'netE.pth,netG.pth'"
                          " (encoder first) or one .npz")
  if len(parts) == 1 and not parts[0].lower().endswith(".npz"):
    raise CheckpointError(f"weights spec {spec!r}: one file must be a .npz with 'netE/' and"
                          " 'netG/' keys; torch checkpoints come as two paths 'netE.pth,netG.pth'")
  for p in parts:
    if not os.path.isfile(p):
      raise CheckpointError(f"weights spec {spec!r}: no such file {p!r}")
  if len(parts) == 2:
    return load_torch_checkpoint(parts[0], parts[1], fast_convt_grad=fast_convt_grad)
  return torch_weights.load_reference_vae(parts[0], fast_convt_grad=fast_convt_grad)
