"""Optimisers and learning-rate schedules of TrainConfig: optax references, torch's update
rules re-implemented in NumPy, schedule boundaries, invalid settings."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ood_jax.errors import InvalidInputError, UnknownNameError
from ood_jax.train import TrainConfig
from ood_jax.train.optim import learning_rate_schedule, make_optimizer

C = np.array([1.0, 4.0, 0.25, 9.0], np.float32)      # f(p) = 0.5 * sum(C p²), grad C p
P0 = np.array([1.0, -0.5, 2.0, 0.3], np.float32)
LR = 0.1


def _config(**kw):
  return TrainConfig(learning_rate=LR, halve_every_epochs=None, **kw)


def _run(tx, steps=3):
  """Parameters after each of ``steps`` updates of ``tx`` on the quadratic."""
  p, state, out = jnp.asarray(P0), tx.init(jnp.asarray(P0)), []
  for _ in range(steps):
    updates, state = tx.update(C * p, state, p)
    p = optax.apply_updates(p, updates)
    out.append(np.asarray(p))
  return out


def _torch_like(kind, steps=3, wd=0.0, b1=0.9, b2=0.999, alpha=0.99, eps=1e-8):
  """torch.optim's Adam / AdamW / Adamax / RMSprop updates (defaults), float64 NumPy."""
  lr = LR
  p = P0.astype(np.float64)
  m, v, out = np.zeros_like(p), np.zeros_like(p), []
  for t in range(1, steps + 1):
    g = C * p
    if kind == "adamw":
      p = p * (1 - lr * wd)
    else:
      g = g + wd * p
    if kind in ("adam", "adamw"):
      m = b1 * m + (1 - b1) * g
      v = b2 * v + (1 - b2) * g * g
      p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    elif kind == "adamax":
      m = b1 * m + (1 - b1) * g
      v = np.maximum(b2 * v, np.abs(g) + eps)
      p = p - lr / (1 - b1 ** t) * m / v
    else:
      v = alpha * v + (1 - alpha) * g * g
      p = p - lr * g / (np.sqrt(v) + eps)
    out.append(p)
  return out


REFERENCES = {
    ("adam", 0.0): lambda: optax.adam(LR),
    ("adam", 0.01): lambda: optax.chain(optax.add_decayed_weights(0.01), optax.adam(LR)),
    ("adamw", 0.01): lambda: optax.adamw(LR, weight_decay=0.01),
    ("adamax", 0.0): lambda: optax.adamax(LR),
    ("adamax", 0.01): lambda: optax.chain(optax.add_decayed_weights(0.01), optax.adamax(LR)),
    ("rmsprop", 0.0): lambda: optax.rmsprop(LR, decay=0.99, eps=1e-8, eps_in_sqrt=False),
    ("rmsprop", 0.01): lambda: optax.chain(optax.add_decayed_weights(0.01),
                                           optax.rmsprop(LR, decay=0.99, eps_in_sqrt=False)),
}


@pytest.mark.parametrize("kind,wd", sorted(REFERENCES))
def test_first_updates_equal_optax_reference_and_torch_rule(kind, wd):
  got = _run(make_optimizer(_config(optimizer=kind, weight_decay=wd), 10))
  for a, b in zip(got, _run(REFERENCES[kind, wd]())):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  # optax forms 1 - b2 in float64 but 1 - b2**t in float32 (torch: both float64), so Adam's
  # early steps (size ~LR) differ from torch's by ~1e-5 relative: atol 3e-5 * LR, 3 steps.
  for a, b in zip(got, _torch_like(kind, wd=wd)):
    np.testing.assert_allclose(a, b, rtol=0, atol=3e-5 * LR)
  assert not np.allclose(got[0], P0)


def test_rmsprop_eps_is_outside_the_square_root():
  # With g tiny, eps inside the root (optax's default) and outside (torch) differ a lot.
  cfg = _config(optimizer="rmsprop", eps=1e-4)
  tx = make_optimizer(cfg, 1)
  g = jnp.array([1e-6])
  u, _ = tx.update(g, tx.init(jnp.zeros(1)), jnp.zeros(1))
  v = (1 - 0.99) * 1e-12
  np.testing.assert_allclose(np.asarray(u), -LR * 1e-6 / (np.sqrt(v) + 1e-4), rtol=1e-5)


def test_default_config_builds_the_same_adam_as_before():
  """Adam with coupled weight decay, and the same optimiser-state tree (old checkpoints)."""
  p = jnp.asarray(P0)
  for wd in (0.0, 0.01):
    cfg = TrainConfig(weight_decay=wd)
    sched = learning_rate_schedule(cfg, 10)
    old = optax.chain(*([optax.add_decayed_weights(wd)] if wd else []),
                      optax.adam(sched, b1=0.9, b2=0.999))
    new = make_optimizer(cfg, 10)
    assert jax.tree.structure(new.init(p)) == jax.tree.structure(old.init(p))
    for a, b in zip(_run(new), _run(old)):
      np.testing.assert_array_equal(a, b)
  clip = TrainConfig(clip_grad_norm=1.0, warmup_steps=5)
  old = optax.chain(optax.clip_by_global_norm(1.0),
                    optax.adam(learning_rate_schedule(clip, 10), b1=0.9, b2=0.999))
  assert jax.tree.structure(make_optimizer(clip, 10).init(p)) == jax.tree.structure(old.init(p))


def test_step_decay_at_given_steps_with_and_without_warmup():
  s = learning_rate_schedule(_config(decay_steps=(80, 90)), steps_per_epoch=7)
  for step, want in [(0, 1.0), (79, 1.0), (80, 0.5), (81, 0.5), (89, 0.5), (90, 0.25),
                     (1000, 0.25)]:
    assert float(s(step)) == pytest.approx(LR * want), step
  w = learning_rate_schedule(_config(decay_steps=(80, 90), decay_factor=0.1, warmup_steps=10), 7)
  for step, want in [(0, 0.0), (5, 0.5), (10, 1.0), (79, 1.0), (80, 0.1), (89, 0.1),
                     (90, 0.01)]:
    assert float(w(step)) == pytest.approx(LR * want), step
  # Nalisnick et al.: halve at 80k and 90k of 100k.
  n = learning_rate_schedule(_config(decay_steps=(80000, 90000)), 100)
  assert [float(n(t)) / LR for t in (79999, 80000, 89999, 90000, 99999)] == pytest.approx(
      [1.0, 0.5, 0.5, 0.25, 0.25])


def test_halving_counts_from_the_end_of_warmup():
  cfg = TrainConfig(learning_rate=LR, halve_every_epochs=2, warmup_steps=4)
  s = learning_rate_schedule(cfg, steps_per_epoch=10)
  for step, want in [(0, 0.0), (2, 0.5), (4, 1.0), (23, 1.0), (24, 0.5), (44, 0.25)]:
    assert float(s(step)) == pytest.approx(LR * want), step


def test_decay_steps_are_normalised_to_a_tuple():
  cfg = _config(decay_steps=[80, 90])
  assert cfg.decay_steps == (80, 90) and isinstance(hash(cfg), int)
  assert dataclasses.replace(cfg, seed=1).decay_steps == (80, 90)


def test_invalid_settings_raise():
  with pytest.raises(UnknownNameError, match="adam, adamw, adamax, rmsprop"):
    TrainConfig(optimizer="sgd")
  with pytest.raises(InvalidInputError, match="halve_every_epochs=None"):
    TrainConfig(decay_steps=(10, 20))            # the default halve_every_epochs is set
  bad = [dict(learning_rate=-1e-3), dict(learning_rate=0.0), dict(learning_rate=float("nan")),
         dict(weight_decay=-1e-4), dict(batch_size=0), dict(epochs=0), dict(num_steps=0),
         dict(warmup_steps=-1), dict(clip_grad_norm=-1.0), dict(b1=1.0), dict(b2=-0.1),
         dict(eps=-1e-8), dict(rmsprop_alpha=1.0), dict(decay_factor=0.0),
         dict(decay_factor=1.5), dict(log_every=0), dict(halve_every_epochs=-1.0)]
  for kw in bad:
    with pytest.raises(InvalidInputError):
      TrainConfig(**kw)
  for steps in [(), (90, 80), (5, 5), (0,), (1.5,), ("a",), (True,), 80]:
    with pytest.raises(InvalidInputError, match="decay_steps"):
      _config(decay_steps=steps)
  with pytest.raises(InvalidInputError, match="warm-up"):
    _config(decay_steps=(5, 20), warmup_steps=10)
  with pytest.raises(InvalidInputError):
    dataclasses.replace(TrainConfig(), learning_rate=-1.0)
