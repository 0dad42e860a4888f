"""Input Complexity: compressed lengths are whole-file bytes x 8 of lossless files, and
the score is NLL_bits - L (or the reference's NLL_nats - L) computed by hand."""

import io
import math

import jax
import numpy as np
import pytest
from PIL import Image

from ood_jax.errors import InvalidInputError
from ood_jax.scores import get_scorer
from ood_jax.scores.input_complexity import compressed_bits, jp2_bytes, png_bytes
from ood_jax.train import init_variables
from toy_models import ToyBN


def _decode(data: bytes) -> np.ndarray:
  return np.array(Image.open(io.BytesIO(data)))


@pytest.mark.parametrize("shape", [(32, 32, 1), (7, 5, 3)])
def test_codecs_are_lossless_and_lengths_are_file_bytes(shape):
  img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
  img[: shape[0] // 2] = 17                          # some structure for the filters
  for codec, enc in (("png", png_bytes), ("jp2", jp2_bytes)):
    data = enc(img)
    assert np.array_equal(_decode(data).reshape(shape), img), codec
    np.testing.assert_array_equal(compressed_bits(img[None], codec), [8 * len(data)])
  # the constant half compresses: shorter than a pure-noise image of the same shape
  noise = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
  assert len(png_bytes(img)) < len(png_bytes(noise))
  assert len(jp2_bytes(img)) < len(jp2_bytes(noise))


def test_black_png_is_75_bytes():
  # libpng/OpenCV level 9 writes a 32x32 black grey image in 75 bytes (fixture README)
  assert len(png_bytes(np.zeros((32, 32, 1), np.uint8))) == 75


def test_score_is_nll_bits_minus_length():
  model = ToyBN()
  x = np.random.default_rng(1).integers(0, 256, (5, 4, 4, 1), dtype=np.uint8)
  x[:2] = 0
  v = init_variables(model, x, seed=0)
  rng = jax.random.fold_in(jax.random.PRNGKey(4), 0)                 # chunk 0's key
  nll = -np.asarray(model.apply(v, x, train=False, method="log_prob", rngs={"sample": rng}),
                    np.float64)
  bits = np.array([8 * len(png_bytes(im)) for im in x], np.float64)
  for ref_units, want in ((False, nll / math.log(2) - bits), (True, nll - bits)):
    s = get_scorer("input_complexity", seed=4, reference_units=ref_units).fit(model, v, None)
    got = get_scorer("input_complexity", seed=4, reference_units=ref_units).score(s, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-2)
  with pytest.raises(InvalidInputError, match="codec"):
    get_scorer("input_complexity", codec="gif")
