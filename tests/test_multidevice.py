"""Data-parallel training and scoring over 8 (forced host) devices equal one device."""

import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _run(tmp_path, n_devices):
  out = str(tmp_path / f"d{n_devices}.npz")
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_devices}"
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run([sys.executable, os.path.join(HERE, "multidevice_run.py"), out],
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return dict(np.load(out))


@pytest.mark.slow
def test_eight_devices_match_one(tmp_path):
  one = _run(tmp_path, 1)
  eight = _run(tmp_path, 8)
  assert int(one["devices"]) == 1 and int(eight["devices"]) == 8
  keys = [k for k in one if k.startswith("p")]
  assert keys and set(keys) == {k for k in eight if k.startswith("p")}
  for k in keys:
    np.testing.assert_allclose(eight[k], one[k], rtol=2e-3, atol=2e-5, err_msg=k)
  np.testing.assert_allclose(eight["scores"], one["scores"], rtol=1e-4)
  # the training moved the parameters (otherwise equality would prove little)
  assert np.std(one["scores"]) > 0
