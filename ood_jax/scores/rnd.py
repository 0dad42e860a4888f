"""``rnd``: random network distillation with perturbed ID images (SVD-RND, Choi & Chung
2020), ROSE's outlier-exposing baseline of App. B.3 / Table 11; see :class:`RND`.

The two target nets are random and fixed: their weights live in the variable collection
``'target'``, not in ``'params'``, so the training loop's optimiser (and any weight decay)
never touches them; only the predictor is trained.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ood_jax.data import batches, perturbations
from ood_jax.data.pixels import validate_images
from ood_jax.errors import InvalidInputError
from ood_jax.scores.base import Scorer, ScorerState
from ood_jax.train import TrainConfig, train

TARGETS = "target"              # variable collection of the fixed random target nets
PREDICTOR_HIDDEN = 2            # extra hidden dense layers of the predictor (256 units each)
HIDDEN_UNITS = 256
LECUN = nn.initializers.lecun_normal()


@functools.lru_cache(maxsize=None)
def _compiled(init):
  """``init(key, shape)`` compiled once per shape (eager initialisers dispatch, and compile,
  every primitive of a truncated normal separately: seconds per net on a CPU)."""
  return jax.jit(init, static_argnums=1)


def _weight(mod: nn.Module, collection: str, name: str, init, shape) -> jax.Array:
  """A weight in ``'params'`` (trained) or in another collection (fixed after init)."""
  init = _compiled(init)
  if collection == "params":
    return mod.param(name, init, tuple(shape))
  return mod.variable(collection, name, lambda: init(mod.make_rng("params"), tuple(shape))).value


class FeatureNet(nn.Module):
  """Images in ``[-1, 1]`` ``N x H x W x C`` -> features ``N x feature_dim``: conv 3x3 /1
  (``width``), conv 4x4 /2 (2 ``width``), conv 4x4 /2 (4 ``width``), each with a bias and
  LeakyReLU(0.2), 'SAME' padding, flattened; ``hidden`` dense ReLU layers of 256; a linear
  dense layer to ``feature_dim``. LeCun-normal kernels, zero biases; weights in
  ``collection``."""
  feature_dim: int = 128
  width: int = 32
  hidden: int = 0
  collection: str = "params"

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    init, zeros = LECUN, nn.initializers.zeros
    for i, (c, k, s) in enumerate([(self.width, 3, 1), (2 * self.width, 4, 2),
                                   (4 * self.width, 4, 2)]):
      kernel = _weight(self, self.collection, f"conv{i}_kernel", init, (k, k, h.shape[-1], c))
      bias = _weight(self, self.collection, f"conv{i}_bias", zeros, (c,))
      h = jax.lax.conv_general_dilated(h, kernel, (s, s), "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
      h = nn.leaky_relu(h + bias, 0.2)
    h = h.reshape(h.shape[0], -1)
    sizes = [HIDDEN_UNITS] * self.hidden + [self.feature_dim]
    for j, units in enumerate(sizes):
      kernel = _weight(self, self.collection, f"dense{j}_kernel", init, (h.shape[-1], units))
      bias = _weight(self, self.collection, f"dense{j}_bias", zeros, (units,))
      h = h @ kernel + bias
      if j < len(sizes) - 1:
        h = nn.relu(h)
    return h


class RNDNet(nn.Module):
  """Predictor ``f`` (``FeatureNet`` with ``PREDICTOR_HIDDEN`` extra hidden layers,
  trained) and the random targets ``g0``, ``g1`` (``FeatureNet``, in collection
  ``'target'``, fixed). Pixels enter as ``x / 127.5 - 1``.

  ``__call__(batch, train)``: ``batch = {'x': uint8 N x H x W x C, 'target': uint8 [N]}``
  (0: an ID image, 1: a perturbed one) -> ``||f(x) - g_target(x)||^2`` per image, float32
  ``[N]``; ``score(x)``: ``||f(x) - g0(x)||^2``.
  """
  image_shape: tuple = (32, 32, 1)
  feature_dim: int = 128
  width: int = 32

  def setup(self):
    self.predictor = FeatureNet(self.feature_dim, self.width, PREDICTOR_HIDDEN, "params")
    self.target0 = FeatureNet(self.feature_dim, self.width, 0, TARGETS)
    self.target1 = FeatureNet(self.feature_dim, self.width, 0, TARGETS)

  @staticmethod
  def _inputs(x: jax.Array) -> jax.Array:
    return x.astype(jnp.float32) / 127.5 - 1.0

  def __call__(self, batch, train: bool = False) -> jax.Array:
    del train                                   # no train-mode layers
    h = self._inputs(batch["x"])
    f, g0, g1 = self.predictor(h), self.target0(h), self.target1(h)
    g = jnp.where((batch["target"] == 1)[:, None], g1, g0)
    return jnp.sum(jnp.square(f - g), axis=-1)

  def score(self, x: jax.Array) -> jax.Array:
    h = self._inputs(x)
    return jnp.sum(jnp.square(self.predictor(h) - self.target0(h)), axis=-1)


@dataclasses.dataclass(frozen=True)
class PerturbTargets:
  """The ``batch_transform`` of RND training: the rows of a ``{'x', 'target'}`` batch with
  ``target == 1`` are perturbed (``perturbations.perturb(..., seed=(seed, step))``: a fresh
  mutation per step for ``'random'``), the others left as they are."""
  name: str = "svd28"
  mu: float = 0.2
  seed: int = 0

  def __call__(self, batch: dict, step: int) -> dict:
    rows = batch["target"] == 1
    x = batch["x"].copy()
    if rows.any():
      x[rows] = perturbations.perturb(x[rows], self.name, mu=self.mu, seed=(self.seed, int(step)))
    return {"x": x, "target": batch["target"]}

  def describe(self) -> dict:
    return {"name": "rnd_perturb_targets", **perturbations.describe(self.name, self.mu),
            "seed": self.seed}


def reference_config(n_train: int) -> TrainConfig:
  """SVD-RND's training (``sungikchoi/NVB``, ``baseline_main_nobar.py``): Adam, lr 1e-4
  multiplied by 0.1 from epoch 25 on, 50 epochs of batch 128 over the ``2 n_train``
  examples (each ID image once as itself, once perturbed)."""
  spe = max(1, (2 * n_train) // 128)
  return TrainConfig(batch_size=128, epochs=50, learning_rate=1e-4, halve_every_epochs=None,
                     decay_steps=(25 * spe,), decay_factor=0.1)


def rnd_dir(ckpt_dir: str, perturbation: str, mu: float, feature_dim: int, width: int,
            seed: int) -> str:
  what = f"random_mu{mu:g}" if perturbation == "random" else perturbation
  return os.path.join(ckpt_dir, f"rnd_{what}_f{feature_dim}_w{width}_seed{seed}")


@dataclasses.dataclass(frozen=True)
class RND(Scorer):
  """``rnd``: ``S(x) = ||f(x) - g0(x)||^2`` (squared L2 over ``feature_dim`` features, no
  units); higher = more OOD (SVD-RND, Choi & Chung 2020; ROSE App. B.3, Table 11).

  ``g0`` and ``g1`` are randomly initialised, fixed target nets; the predictor ``f`` is
  trained to match ``g0`` on the ID training images and ``g1`` on their perturbations
  (``perturbation``): the training set is every ID image twice, once as itself (target
  ``g0``) and once perturbed (target ``g1``), shuffled together (the reference's
  ``CIFAR20`` set), the mean of ``||f(x) - g_t(x)||^2`` minimised. Perturbed rows are
  perturbed per training batch (``PerturbTargets``, the loop's ``batch_transform``): a
  fresh, reproducible mutation per step for ``'random'``. Architecture (small conv nets,
  not the reference's ResNet-34s, so it trains on a CPU): ``FeatureNet`` (3 convs of
  ``width``, ``2 width``, ``4 width`` channels, strides 1, 2, 2, LeakyReLU; dense to
  ``feature_dim``), the predictor with two more hidden dense layers of 256 (Burda et al.'s
  predictor is deeper than the target; the reference's ResNet345 vs ResNet342). Inputs
  ``x / 127.5 - 1`` (the reference normalises by CIFAR-10's channel statistics).
  ``fit(model, variables, id_data)`` uses only ``model.image_shape`` of the generative
  model; the nets are initialised with ``train_config.seed``.

  Attributes:
    perturbation: ``'svd28'`` (default: SVD-RND's ``--eigen 28``), ``'svd22'``,
      ``'dct28'``, ``'blur'`` or ``'random'`` (rate ``mu``): ``ood_jax.data.perturbations``.
    mu: mutation rate of ``'random'``, in [0, 1] (ROSE: 0.1, 0.2, 0.3).
    feature_dim: features of ``f``, ``g0``, ``g1`` (the reference: 512).
    width: channels of the first conv (then 2x and 4x).
    train_config: how ``f`` is trained; None = ``reference_config(n)`` (Adam, lr 1e-4, x0.1
      from epoch 25, 50 epochs of batch 128 over the 2n images). The experiments pass the
      generative model's training config (its budget per preset).
    ckpt_dir: the nets are cached under
      ``ckpt_dir/rnd_<perturbation>_f<feature_dim>_w<width>_seed<seed>``; None: not cached.
    rnd_variables: trained ``RNDNet`` variables (``{'params', 'target'}``); skips training.
    name: ``'rnd'``.
    seed: seeds the perturbation draws (with the step).
    progress: show progress bars (training and scoring).
    chunk_size: images per compiled call, at most.
  """
  name: str = "rnd"
  perturbation: str = "svd28"
  mu: float = 0.2
  feature_dim: int = 128
  width: int = 32
  train_config: TrainConfig | None = None
  ckpt_dir: str | None = None
  rnd_variables: Any = None

  def __post_init__(self):
    super().__post_init__()
    try:
      perturbations.parse(self.perturbation)
      perturbations.check_mu(self.mu)
    except InvalidInputError as e:
      raise InvalidInputError(f"{self.name}: {e}") from None
    for field in ("feature_dim", "width"):
      v = getattr(self, field)
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise InvalidInputError(f"{self.name}: {field} must be an integer >= 1, got {v!r}.")
    if self.train_config is not None and not isinstance(self.train_config, TrainConfig):
      raise InvalidInputError(f"{self.name}: train_config must be a TrainConfig or None, got "
                              f"{type(self.train_config).__name__}.")

  def net(self, image_shape) -> RNDNet:
    return RNDNet(image_shape=tuple(image_shape), feature_dim=int(self.feature_dim),
                  width=int(self.width))

  def config(self, n_train: int) -> TrainConfig:
    return self.train_config or reference_config(n_train)

  def batch_transform(self) -> PerturbTargets:
    return PerturbTargets(self.perturbation, self.mu, self.seed)

  def train_nets(self, image_shape, id_data: np.ndarray) -> dict:
    """Trains (or loads from ``ckpt_dir``) the predictor; returns ``{'params', 'target'}``."""
    x = validate_images(id_data, what=f"{self.name} training set", hwc=tuple(image_shape))
    n = len(x)
    data = {"x": np.concatenate([x, x]),
            "target": np.concatenate([np.zeros(n, np.uint8), np.ones(n, np.uint8)])}
    ckpt = None if self.ckpt_dir is None else rnd_dir(
        self.ckpt_dir, self.perturbation, self.mu, self.feature_dim, self.width, self.seed)
    result = train(self.net(image_shape), data, self.config(n), ckpt, progress=self.progress,
                   desc=f"train rnd ({self.perturbation})", batch_transform=self.batch_transform())
    return result.variables

  def fit(self, model, variables, id_data=None) -> ScorerState:
    del variables                       # the generative model only gives the image shape
    shape = tuple(model.image_shape)
    nets = self.rnd_variables
    if nets is None:
      if id_data is None:
        raise InvalidInputError(f"{self.name} needs the ID training images (to train its "
                                "predictor) or rnd_variables.")
      nets = self.train_nets(shape, id_data)
    net = self.net(shape)
    fn = jax.jit(lambda v, x, rng: net.apply(v, x, method="score"))
    return ScorerState(params=batches.replicate(nets), chunk_fn=fn, image_shape=shape,
                       name=self.name)
