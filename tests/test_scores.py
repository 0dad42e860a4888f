"""Scorer protocol: chunking, single compilation, validation, registry."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ood_jax.errors import InvalidInputError, UnknownNameError
import ood_jax.scores
from ood_jax.scores import (NLL, SCORERS, Scorer, get_scorer, known_scores, register_scorer,
                            scorer_class, scorer_fields)
from ood_jax.scores.base import ScorerState
from ood_jax.train import init_variables
from toy_models import ToyBN


def _x(n, seed=0, shape=(4, 4, 1)):
  return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def test_chunking_pads_and_compiles_one_shape():
  x = _x(11, seed=1)
  calls = []

  def fn(params, xb, rng):
    calls.append(xb.shape)          # runs at trace time only
    return jnp.sum(xb.astype(jnp.float32), axis=(1, 2, 3)) * params["scale"]

  for chunk in (3, 4, 100):
    calls.clear()
    state = ScorerState(params={"scale": jnp.float32(2.0)}, chunk_fn=jax.jit(fn),
                        image_shape=(4, 4, 1), name="sum")
    s = NLL(chunk_size=chunk).score(state, x)
    np.testing.assert_allclose(s, 2.0 * x.reshape(11, -1).sum(1).astype(np.float32))
    assert s.dtype == np.float32 and s.shape == (11,)
    assert len(calls) == 1           # one trace: every chunk has the same shape


def test_nll_equals_minus_eval_mode_log_prob():
  model = ToyBN()
  v = init_variables(model, _x(8), seed=0)
  x = _x(11, seed=1)
  scorer = NLL(chunk_size=64, seed=5)
  s = scorer.score(scorer.fit(model, v, None), x)
  rng = jax.random.fold_in(jax.random.PRNGKey(5), 0)      # chunk 0's key
  ref = -np.asarray(model.apply(v, x, train=False, method="log_prob", rngs={"sample": rng}))
  np.testing.assert_allclose(s, ref, rtol=1e-5, atol=1e-5)


def test_nll_compiles_once_across_calls():
  model = ToyBN()
  v = init_variables(model, _x(8), seed=0)
  scorer = NLL(chunk_size=4)
  state = scorer.fit(model, v, None)
  scorer.score(state, _x(10))
  scorer.score(state, _x(7, seed=3))
  assert state.chunk_fn._cache_size() == 1


def test_bad_inputs_are_rejected():
  model = ToyBN()
  v = init_variables(model, _x(8), seed=0)
  scorer = NLL()
  state = scorer.fit(model, v, None)
  with pytest.raises(InvalidInputError, match="uint8"):
    scorer.score(state, _x(4).astype(np.float32) / 255)
  nan = np.full((2, 4, 4, 1), np.nan, np.float32)
  with pytest.raises(InvalidInputError, match="NaN"):
    scorer.score(state, nan)
  with pytest.raises(InvalidInputError, match="4 dimensions"):
    scorer.score(state, _x(4)[..., 0])
  with pytest.raises(InvalidInputError, match="channels"):
    scorer.score(state, _x(4, shape=(4, 4, 2)))
  with pytest.raises(InvalidInputError, match="empty"):
    scorer.score(state, _x(0))
  with pytest.raises(InvalidInputError, match="does not match"):
    scorer.score(state, _x(3, shape=(8, 8, 1)))


def test_registry():
  assert get_scorer("nll", k=3).k == 3
  with pytest.raises(UnknownNameError, match="known scores: .*nll"):
    get_scorer("nope")
  assert "nll" in known_scores() and "rose" in known_scores()
  assert scorer_fields("nll") == {"seed": 0, "progress": False, "chunk_size": 256, "k": 16,
                                  "max_latents": 2560}


def test_settings_are_strict_and_context_is_lenient():
  # A misspelt or mistyped setting is one error naming the valid fields.
  with pytest.raises(InvalidInputError,
                     match=r"(?s)unknown field 'fishr'; valid fields:.*fisher: str \| None = None"):
    get_scorer("rose", fishr="diag")
  with pytest.raises(InvalidInputError, match="'n_fisher' takes int"):
    get_scorer("rose", n_fisher="10")
  with pytest.raises(InvalidInputError, match="unknown field 'unrelated'"):
    get_scorer("nll", k=3, unrelated=1)
  with pytest.raises(InvalidInputError, match="unknown field 'name'"):
    get_scorer("nll", name="other")
  # Context: only the fields a scorer has; settings win over context.
  ctx = {"k": 5, "seed": 3, "progress": False, "train_config": None, "ckpt_dir": "/tmp/x"}
  nll = get_scorer("nll", context=ctx)
  assert isinstance(nll, NLL) and (nll.k, nll.seed) == (5, 3)
  assert get_scorer("nll", context=ctx, k=7).k == 7
  rose = get_scorer("rose", context=ctx, fisher="diag")
  assert (rose.fisher, rose.seed, rose.name) == ("diag", 3, "rose")


def test_scorers_are_dataclasses_on_one_base_with_documented_fields():
  for name in known_scores():
    cls = scorer_class(name)
    assert issubclass(cls, Scorer) and dataclasses.is_dataclass(cls), name
    assert cls().name == name
    assert getattr(ood_jax.scores, cls.__name__) is cls
    fields = [f.name for f in dataclasses.fields(cls)]
    assert fields[:4] == ["name", "seed", "progress", "chunk_size"], name
    doc = cls.__doc__ or ""
    assert "Attributes:" in doc, name
    for f in fields:
      assert f"\n    {f}: " in doc, (name, f)
    with pytest.raises(dataclasses.FrozenInstanceError):
      cls().seed = 1
  assert ood_jax.scores.Rose().chunk_size == 128
  with pytest.raises(AttributeError):
    ood_jax.scores.NoSuchScorer  # pylint: disable=pointless-statement


def test_register_scorer():
  @dataclasses.dataclass(frozen=True)
  class Half(NLL):
    name: str = "half"

  register_scorer("half", Half)
  try:
    assert isinstance(get_scorer("half", k=2), Half) and "half" in known_scores()
  finally:
    SCORERS.unregister("half")
  with pytest.raises(InvalidInputError, match="register_scorer"):
    register_scorer("bad", object)


def test_nll_chunk_bounds_latents():
  assert NLL(k=1000, chunk_size=256).images_per_chunk() == 2
  assert NLL(k=20, chunk_size=256).images_per_chunk() == 128
  assert NLL(k=10, chunk_size=256).images_per_chunk() == 256
  assert NLL(k=1, chunk_size=256).images_per_chunk() == 256
  assert NLL(k=5000).images_per_chunk() == 1
