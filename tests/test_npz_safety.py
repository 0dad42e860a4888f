"""Unreadable local npz files fail with one clear error, before any allocation."""

from __future__ import annotations

import io
import os
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from ood_jax import data
from ood_jax.data import local
from ood_jax.errors import InvalidInputError

HUGE = (100_000_000, 28, 28)       # 78.4 GB of uint8 declared


def _npy_bytes(header: dict, payload: bytes, version=(1, 0)) -> bytes:
  buf = io.BytesIO()
  if version == (1, 0):
    np.lib.format.write_array_header_1_0(buf, header)
  else:
    np.lib.format.write_array_header_2_0(buf, header)
  return buf.getvalue() + payload


def _zip(path, members: dict[str, bytes], compression=zipfile.ZIP_STORED):
  with zipfile.ZipFile(path, "w", compression=compression) as zf:
    for name, blob in members.items():
      zf.writestr(name, blob)
  return path


def _huge_x(path, compression=zipfile.ZIP_STORED):
  header = {"descr": "|u1", "fortran_order": False, "shape": HUGE}
  return _zip(path, {"x.npy": _npy_bytes(header, b"\x00" * 16)}, compression)


def _images(n=4, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, 5, 5, 1), dtype=np.uint8)


def _fails(path, match: str, fn=local.read_npz, *args):
  """Asserts ``fn(path)`` raises the one unreadable-npz error naming ``match``."""
  with pytest.raises(InvalidInputError) as info:
    fn(str(path), *args)
  msg = str(info.value)
  assert msg.startswith(f"{path}: not a readable npz"), msg
  assert match in msg, msg
  assert "pickle" not in msg, msg
  return msg


def test_empty_file(tmp_path):
  path = tmp_path / "a_test.npz"
  path.write_bytes(b"")
  _fails(path, "empty, 0 bytes")


def test_random_bytes_and_npy_are_not_zip(tmp_path):
  path = tmp_path / "a_test.npz"
  path.write_bytes(np.random.default_rng(0).bytes(4096))
  _fails(path, "not a zip archive")
  np.save(tmp_path / "b.npy", _images())
  os.replace(tmp_path / "b.npy", path)         # a plain .npy named .npz
  _fails(path, "not a zip archive")
  path.write_text("hello, not an archive\n")
  _fails(path, "not a zip archive")


def test_truncated_file(tmp_path):
  path = tmp_path / "a_test.npz"
  np.savez(path, x=_images(50))
  blob = path.read_bytes()
  path.write_bytes(blob[: len(blob) // 2])
  _fails(path, "not a zip archive")            # the zip directory at the end is gone


def test_member_longer_than_file(tmp_path):
  path = tmp_path / "a_test.npz"
  np.savez(path, x=_images(50))
  with zipfile.ZipFile(path) as zf:
    info = zf.getinfo("x.npy")
  blob = bytearray(path.read_bytes())
  start = info.header_offset + 30 + len(info.filename) + len(info.extra)
  end = start + info.compress_size
  path.write_bytes(bytes(blob[:start + 200]) + bytes(blob[end:]))  # data cut, directory kept
  msg = _fails(path, "x.npy")
  assert "truncated" in msg or "corrupt" in msg or "header" in msg, msg


def _patch_listed_size(path, file_size: int, compress_size: int | None = None):
  """Rewrites the sizes of the (only) member in the zip's central directory."""
  blob = bytearray(path.read_bytes())
  i = blob.index(b"PK\x01\x02")
  if compress_size is not None:
    blob[i + 20:i + 24] = compress_size.to_bytes(4, "little")
  blob[i + 24:i + 28] = file_size.to_bytes(4, "little")
  path.write_bytes(bytes(blob))


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_directory_listing_more_than_the_file(tmp_path, compression):
  """A member whose header and listed size agree on 200 MB the file does not hold."""
  path = tmp_path / "a_test.npz"
  header = {"descr": "|u1", "fortran_order": False, "shape": (200, 1000, 1000)}
  npy = _npy_bytes(header, b"\x00" * 16)
  _zip(path, {"x.npy": npy}, compression)
  size = 200_000_000 + len(npy) - 16
  _patch_listed_size(path, size, size if compression == zipfile.ZIP_STORED else None)
  tracemalloc.start()
  try:
    msg = _fails(path, "x.npy")
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert "truncated" in msg or "which no zip writer produces" in msg, msg
  assert peak < 50 * 2**20, peak


def test_bad_header(tmp_path):
  path = _zip(tmp_path / "a_test.npz", {"x.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': garbage"})
  _fails(path, "x.npy has no valid .npy header")
  path = _zip(tmp_path / "b_test.npz", {"x.npy": b"not an npy member at all"})
  _fails(path, "x.npy has no valid .npy header")
  path = _zip(tmp_path / "c_test.npz", {"x": _images().tobytes()})       # no .npy member
  _fails(path, "not stored as a member x.npy")


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_huge_declared_shape_fails_fast_without_memory(tmp_path, compression, version):
  path = tmp_path / "a_test.npz"
  header = {"descr": "|u1", "fortran_order": False, "shape": HUGE}
  _zip(path, {"x.npy": _npy_bytes(header, b"\x00" * 16, version)}, compression)
  tracemalloc.start()
  t0 = time.perf_counter()
  try:
    msg = _fails(path, "declares shape (100000000, 28, 28) of uint8, 78,400,000,000 bytes")
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert "16 bytes are stored" in msg
  assert peak < 50 * 2**20, peak
  assert time.perf_counter() - t0 < 2.0


def test_header_declaring_less_than_stored(tmp_path):
  header = {"descr": "|u1", "fortran_order": False, "shape": (2, 5, 5)}
  path = _zip(tmp_path / "a_test.npz", {"x.npy": _npy_bytes(header, b"\x00" * 100)})
  _fails(path, "50 bytes, but 100 bytes are stored")


def test_object_dtype(tmp_path):
  path = tmp_path / "a_test.npz"
  x = np.empty(3, dtype=object)
  x[:] = [{"a": 1}, [2], "three"]
  np.savez(path, x=x)
  _fails(path, "holds Python objects (dtype object)")


def test_valid_files_still_load(tmp_path):
  x = _images()
  path = tmp_path / "a_test.npz"
  np.savez(path, x=x, y=np.arange(4)[:, None])
  np.testing.assert_array_equal(local.read_npz(str(path)), x)
  np.testing.assert_array_equal(local.read_labels(str(path), 4), np.arange(4))
  path3 = tmp_path / "b_test.npz"
  np.savez_compressed(path3, x=x[..., 0], y=np.ones(4, bool))
  np.testing.assert_array_equal(local.read_npz(str(path3)), x)
  assert local.read_labels(str(path3), 4).dtype == np.int64


def test_missing_x_key_message_kept(tmp_path):
  path = tmp_path / "a_test.npz"
  np.savez(path, images=_images())
  with pytest.raises(InvalidInputError, match=r"no array 'x' \(found keys \['images'\]\); store"):
    local.read_npz(str(path))


def test_labels_not_read_unless_class_labels(tmp_path):
  path = tmp_path / "a_test.npz"
  y = np.empty(4, dtype=object)
  y[:] = ["a", 1, None, 2.0]
  np.savez(path, x=_images(), y=y)
  assert local.read_labels(str(path), 4) is None                   # pickled: not labels
  np.savez(path, x=_images(), y=np.zeros((4, 40), np.float32))
  assert local.read_labels(str(path), 4) is None
  np.savez(path, x=_images(), y=np.arange(5))
  with pytest.raises(InvalidInputError, match="has 5 labels for 4 examples"):
    local.read_labels(str(path), 4)


def test_labels_with_huge_header_fail(tmp_path):
  header = {"descr": "<i8", "fortran_order": False, "shape": (10**12,)}
  buf = io.BytesIO()
  np.save(buf, _images())
  path = _zip(tmp_path / "a_test.npz",
              {"x.npy": buf.getvalue(), "y.npy": _npy_bytes(header, b"\x00" * 8)})
  _fails(path, "y.npy's header declares shape (1000000000000,)", local.read_labels, 4)


def test_through_data_load(tmp_path):
  _huge_x(tmp_path / "mybroken_test.npz")
  path = tmp_path / "mybroken_test.npz"
  with pytest.raises(InvalidInputError) as info:
    data.load("mybroken", "test", data_dir=tmp_path)
  assert str(info.value).startswith(f"{path}: not a readable npz"), str(info.value)
  assert "78,400,000,000 bytes" in str(info.value)
