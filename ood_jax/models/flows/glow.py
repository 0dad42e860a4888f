"""Glow (Kingma & Dhariwal 2018) and CV-Glow (Nalisnick et al. 2019), as used by ROSE and
Kirichenko et al.

Pixels ``y = (x + u) / 256 - 1/2`` (the shift has log-det 0; ``logit=True``: RealNVP's logit
pre-transform instead, alpha 0.05, its log-det counted) go through ``levels`` levels;
level l: squeeze 2x2, then ``steps`` steps of ActNorm -> invertible 1x1 conv -> coupling
(channel halves: the first conditions, the second is transformed; the 1x1 conv mixes the
channels between steps), then, except at the last level, a split: the second half of the
channels is factored out with a learned conditional prior ``N(mean, exp(logs)^2)``,
``(mean, logs) = conv3x3(kept half)`` (zero-initialised). The top latent has a learned prior
with one mean and log-scale per entry (zero-initialised). ``learn_prior=False``: every latent
has a fixed ``N(0, I)`` prior (no split-prior convs, no ``top_mean`` / ``top_logs``
parameters; Nalisnick et al. App. A.1's "a prior with zero mean and unit variance", and the
prior of Kirichenko et al.'s reference Glow).

* Coupling: affine (``s = scale * tanh(raw)``, as the other flows here, instead of Glow's
  ``sigmoid(raw + 2)``; ``shift_first``: ``y = (x + t) * exp(s)``, see ``coupling.py``) with
  an st-net chosen by ``st_net``: ``'glow'`` = ``GlowSTNet`` (3x3, 1x1, 3x3 convs, ``hidden``
  channels, the last zero-initialised), ``'highway'`` = ``HighwaySTNet`` (``highway_layers``
  highway layers of ``hidden`` channels, Kirichenko et al.; ``stnets.py``).
  ``additive=True`` gives **CV-Glow**, whose log-det is the sum of the ActNorm and 1x1-conv
  terms only (it does not depend on the input or the st-nets).
* 1x1 conv: LU-parametrised (``lu=True``, default) or plain.
* ``actnorm=False``: no ActNorm layer in the steps (the ``GlowSTNet``'s own ActNorms stay).
* ActNorm data-dependent init: pure-functional, during ``model.init``: each ActNorm
  (in the steps and in the st-nets) sets its bias/scale from the statistics of the batch that
  reaches it in the ``init`` call (the training loop calls ``init`` with its first batch).
  There is no BatchNorm, so ``train`` changes nothing: both modes give the same result.

Parameter paths (ROSE scores the 1x1 convs): ``level_{l}/step{k}/invconv/...``, i.e. every
1x1-conv parameter has ``invconv`` in its path: ``lower``, ``upper``, ``log_s`` (LU; the fixed
``perm`` and ``sign_s`` are in the ``flow_constants`` collection) or ``kernel`` (plain).

Every step is a ``Chain`` of bijector layers (``forward_and_log_det`` /
``inverse_and_log_det``); ``Glow.constant_volume`` says whether the flow's log-det is
input-independent (CV-Glow without ``logit``), from the layers' ``constant_log_det``
declarations.

Model specs: ``GLOW_SPEC`` (``'glow'``) and ``CV_GLOW_SPEC`` (``'cv_glow'``), the same presets
with ``additive`` False / True; ROSE scores ``*invconv*``; no BatchNorm.

Presets (``make_glow`` / ``make_cv_glow``; grey / colour):

* ``paper``: L x K = 2 x 16, hidden 200 (grey) / 3 x 8, hidden 400 (colour).
* ``kirichenko`` (Kirichenko et al. App. E): 2 x 16, highway st-net with 3 layers of 200
  hidden units (grey) / 3 x 8, 400 units (colour); from their reference code, where the
  paper is silent: ``learn_prior=False`` (``N(0, I)`` prior) and ``shift_first``. Recipe
  (``recipes``, App. E): RMSprop, lr 5e-5 (no decay; our 200-step warm-up stays), batch 32,
  80 epochs (grey and colour), as the paper states; the reference's README trains colour Glow
  at lr 1e-5 for 161 epochs and applies weight decay 5e-5 (its argparse default) to RMSprop,
  which the paper does not mention (we use none).
  Left at our defaults although the reference differs: ``logit`` (the reference Glow starts
  with ``iLogits``, constraint 0.9 = ``logit=True``; off here because it would make the
  shared ``cv_glow`` preset input-dependent in volume) and ``lu`` (the reference's 1x1 conv
  is the plain ``lu=False``; the same function class).
* ``kirichenko_cpu``: the ``kirichenko`` flags at 2 x 4, hidden 64 (grey and colour).
* ``nalisnick`` (Nalisnick et al. App. A.1; ``cv_glow``: CV-Glow): 2 x 16, highway st-net
  with 3 layers of 200 hidden units (grey) / 3 x 8, 400 units (colour), no ActNorm
  (``actnorm=False``: "we did not use any form of normalization"), the last st-net layer
  zero-initialised (as always here), ``N(0, I)`` prior (``learn_prior=False``). Recipe:
  RMSprop, lr 1e-5, 100K steps halved at 80K and 90K, batch 32, no warm-up, no gradient
  clipping; colour: L2 5e-2 (coupled weight decay on the per-image nats loss; the paper does
  not give the loss scale). Not reproduced: the truncated-normal conv initialisation
  (variance ``1/sqrt(fan_in)``; ours: flax's defaults and the highway st-net's own
  ``HIGHWAY_INIT_STD``); ``shift_first=False`` and LU 1x1 convs (Glow's; the paper is silent).
* ``nalisnick_cpu``: the ``nalisnick`` flags at 2 x 4, hidden 64 (grey and colour); recipe
  RMSprop lr 1e-3, no decay, our 200-step warm-up and clipping at 100 kept; 0.3 epoch at the
  ``cpu`` experiment preset (562 / 469 steps, about 0.5% of 100K) so that an experiment training
  the four flows fits in about an hour on 2 cores (one epoch: 179 min for all four). lr 1e-4
  left the CV-Glow at 8.6 bits/dim after half an epoch (its only volume change is the 1x1
  kernels'; see ``experiments/results/nalisnick_cpu.md``).
* ``cpu``: 2 x 4, hidden 64 (grey and colour).
* ``smoke``: 2 x 2, hidden 16.

Not reproduced from the reference Glow: its coupling transforms the *first* channel half
(ours the second; the 1x1 convs make the two equivalent up to a permutation) and weight-norms
the per-channel ``scale``.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from ood_jax.errors import InvalidInputError
from ood_jax.models.flows.actnorm import ActNorm
from ood_jax.models.flows.bijector import Bijector
from ood_jax.models.flows.chain import Chain
from ood_jax.models.flows.coupling import Coupling
from ood_jax.models.flows.flow_model import FlowModel, check_image_shape, gaussian_log_density
from ood_jax.models.flows.invconv import InvConv1x1, InvConv1x1LU
from ood_jax.models.flows.logit import LogitTransform
from ood_jax.models.flows.squeeze import Squeeze
from ood_jax.models.flows.stnets import GlowSTNet, HighwaySTNet
from ood_jax.models.spec import ModelSpec
from ood_jax.registry import choose

ST_NETS = ("glow", "highway")


def make_st_net(kind: str, features: int, hidden: int, highway_layers: int) -> nn.Module:
  """An unbound st-network: ``GlowSTNet`` (``'glow'``) or ``HighwaySTNet`` (``'highway'``)."""
  if choose("Glow st_net", kind, ST_NETS) == "highway":
    return HighwaySTNet(features, hidden, highway_layers, parent=None)
  return GlowSTNet(features, hidden, parent=None)


LOGIT_ALPHA = 0.05  # the logit pre-transform's (RealNVP's and the reference's constraint 0.9)


class GlowStep(Bijector):
  """ActNorm (``actnorm``) -> 1x1 conv -> coupling, a ``Chain`` (bijector on
  ``N x H x W x C``, C >= 2)."""
  hidden: int
  additive: bool = False
  lu: bool = True
  st_net: str = "glow"
  highway_layers: int = 3
  shift_first: bool = False
  actnorm: bool = True

  @nn.nowrap
  def _layers(self, c: int, **where) -> list[nn.Module]:
    """The step's layers for ``c`` channels (``where``: ``parent=None`` for unbound probes)."""
    cb = c - c // 2
    net = make_st_net(self.st_net, cb if self.additive else 2 * cb, self.hidden,
                      self.highway_layers)
    conv = InvConv1x1LU if self.lu else InvConv1x1
    norm = [ActNorm(name="actnorm", **where)] if self.actnorm else []
    return norm + [conv(name="invconv", **where),
                   Coupling(mask="channel", index=0, additive=self.additive, st_net=net,
                            shift_first=self.shift_first, name="coupling", **where)]

  @nn.compact
  def _chain(self, c: int) -> Chain:
    return Chain(self._layers(c), name="chain")

  def forward_and_log_det(self, h: jax.Array, train: bool = False):
    return self._chain(h.shape[-1]).forward_and_log_det(h, train)

  def inverse_and_log_det(self, h: jax.Array):
    return self._chain(h.shape[-1]).inverse_and_log_det(h)

  @nn.nowrap
  def constant_log_det(self, train: bool) -> bool:
    """From the layers' own declarations (ActNorm, 1x1 conv: yes; coupling iff additive)."""
    return Chain(self._layers(2, parent=None), parent=None).constant_log_det(train)


class GlowLevel(nn.Module):
  """Squeeze and ``steps`` Glow steps (one ``Chain``), then (``split``) a factored-out half
  of the channels with a learned conditional prior (``learn_prior``) or ``N(0, I)``.

  ``encode(h, train)`` -> ``(h_kept, eps or None, log p(z_split), logdet)``;
  ``decode(h_kept, eps, temperature)`` -> ``h`` (eval mode).
  """
  steps: int
  hidden: int
  split: bool
  additive: bool = False
  lu: bool = True
  st_net: str = "glow"
  highway_layers: int = 3
  shift_first: bool = False
  learn_prior: bool = True
  actnorm: bool = True

  @nn.compact
  def _modules(self, c2: int) -> tuple[Chain, Optional[nn.Module]]:
    """``(chain, prior conv or None)``; ``c2`` the channels factored out."""
    chain = Chain([Squeeze(name="squeeze")]
                  + [GlowStep(self.hidden, self.additive, self.lu, self.st_net,
                              self.highway_layers, self.shift_first, self.actnorm,
                              name=f"step{k}")
                     for k in range(self.steps)], name="chain")
    prior = None
    if self.split and self.learn_prior:
      prior = nn.Conv(2 * c2, (3, 3), padding="SAME", kernel_init=nn.initializers.zeros,
                      bias_init=nn.initializers.zeros, name="prior")
    return chain, prior

  @staticmethod
  def _mean_logs(prior: Optional[nn.Module], h1: jax.Array, c2: int):
    """``(mean, logs)`` of the split latent's prior given the kept half (``N(0, I)``: 0, 0)."""
    if prior is None:
      return 0.0, 0.0
    out = prior(h1)
    return out[..., :c2], out[..., c2:]

  def encode(self, h: jax.Array, train: bool = False):
    c = 4 * h.shape[-1]
    c2 = c - c // 2
    chain, prior = self._modules(c2)
    h, logdet = chain.forward_and_log_det(h, train)
    if not self.split:
      return h, None, jnp.zeros_like(logdet), logdet
    h1, z2 = h[..., :c // 2], h[..., c // 2:]
    mean, logs = self._mean_logs(prior, h1, c2)
    return h1, (z2 - mean) * jnp.exp(-logs), gaussian_log_density(z2, mean, logs), logdet

  def decode(self, h: jax.Array, eps: Optional[jax.Array] = None, temperature: float = 1.0):
    chain, prior = self._modules(eps.shape[-1] if self.split else 0)
    if self.split:
      mean, logs = self._mean_logs(prior, h, eps.shape[-1])
      h = jnp.concatenate([h, mean + temperature * jnp.exp(logs) * eps], axis=-1)
    return chain.inverse_and_log_det(h)[0]


class Glow(FlowModel):
  """Multi-scale Glow / CV-Glow (see the module docstring for every attribute)."""
  image_shape: tuple[int, int, int] = (28, 28, 1)
  levels: int = 2
  steps: int = 16
  hidden: int = 200
  additive: bool = False
  lu: bool = True
  st_net: str = "glow"
  highway_layers: int = 3
  learn_prior: bool = True
  shift_first: bool = False
  logit: bool = False
  actnorm: bool = True

  def __post_init__(self):
    if int(self.levels) < 1 or int(self.steps) < 1 or int(self.hidden) < 1:
      raise InvalidInputError(
          f"Glow: levels, steps and hidden must be >= 1, got {self.levels}, {self.steps},"
          f" {self.hidden}.")
    if int(self.highway_layers) < 0:
      raise InvalidInputError(f"Glow: highway_layers must be >= 0, got {self.highway_layers}.")
    choose("Glow st_net", self.st_net, ST_NETS)
    check_image_shape(self.image_shape, int(self.levels), "Glow")
    super().__post_init__()

  def setup(self):
    self.level = [GlowLevel(self.steps, self.hidden, l < self.levels - 1, self.additive, self.lu,
                            self.st_net, self.highway_layers, self.shift_first,
                            self.learn_prior, self.actnorm)
                  for l in range(self.levels)]
    self.pre = LogitTransform(LOGIT_ALPHA) if self.logit else None
    if self.learn_prior:
      top = self.latent_shapes()[-1]
      self.top_mean = self.param("top_mean", nn.initializers.zeros, top, jnp.float32)
      self.top_logs = self.param("top_logs", nn.initializers.zeros, top, jnp.float32)
    else:  # N(0, I): no parameters
      self.top_mean, self.top_logs = 0.0, 0.0

  @property
  def constant_volume(self) -> bool:
    """Whether ``log|det dz/dy|`` is the same for every input, in both modes: True iff every
    step's layers declare a constant log-det (``constant_log_det``), i.e. for CV-Glow
    (additive couplings; ActNorm and the 1x1 convs are constant, the squeezes 0) without
    the logit pre-transform."""
    step = GlowStep(self.hidden, self.additive, self.lu, self.st_net, self.highway_layers,
                    self.shift_first, self.actnorm, parent=None)
    layers = [LogitTransform(LOGIT_ALPHA, parent=None)] if self.logit else []
    chain = Chain(layers + [step], parent=None)
    return chain.constant_log_det(False) and chain.constant_log_det(True)

  def latent_shapes(self) -> list[tuple[int, int, int]]:
    """Per-image shapes of the split latents (one per level but the last), then the top's."""
    h, w, c = self.image_shape
    shapes = []
    for l in range(self.levels):
      h, w, c = h // 2, w // 2, 4 * c
      if l < self.levels - 1:
        shapes.append((h, w, c - c // 2))
        c = c // 2
    return shapes + [(h, w, c)]

  def encode_unit(self, y: jax.Array, train: bool = False):
    """``y`` in ``[0, 1)`` -> ``(standardised latents, log p(z), log|det dz/dy|)`` (nats)."""
    if self.logit:
      h, logdet = self.pre.forward_and_log_det(y, train)
    else:
      h, logdet = y - 0.5, jnp.zeros((y.shape[0],), jnp.float32)
    log_pz = jnp.zeros((y.shape[0],), jnp.float32)
    eps = []
    for level in self.level:
      h, e, lpz, ld = level.encode(h, train)
      logdet, log_pz = logdet + ld, log_pz + lpz
      if e is not None:
        eps.append(e)
    eps.append((h - self.top_mean) * jnp.exp(-self.top_logs))
    log_pz = log_pz + gaussian_log_density(h, self.top_mean, self.top_logs)
    return eps, log_pz, logdet

  def decode_unit(self, eps: list[jax.Array], temperature: float = 1.0) -> jax.Array:
    """Inverse of ``encode_unit``; each latent is ``mean + temperature * std * eps``."""
    h = self.top_mean + temperature * jnp.exp(self.top_logs) * eps[-1]
    for l in reversed(range(self.levels)):
      e = eps[l] if l < self.levels - 1 else None
      h = self.level[l].decode(h, e, temperature)
    return self.pre.inverse_and_log_det(h)[0] if self.logit else h + 0.5


_KIRICHENKO = dict(st_net="highway", highway_layers=3, learn_prior=False, shift_first=True)

# Nalisnick et al. App. A.1: "3-layer Highway network", "we did not use any form of
# normalization (batchnorm nor actnorm)", "a prior with zero mean and unit variance".
_NALISNICK = dict(st_net="highway", highway_layers=3, learn_prior=False, actnorm=False)

_PRESETS = {
    "smoke": {1: dict(levels=2, steps=2, hidden=16), 3: dict(levels=2, steps=2, hidden=16)},
    "cpu": {1: dict(levels=2, steps=4, hidden=64), 3: dict(levels=2, steps=4, hidden=64)},
    "paper": {1: dict(levels=2, steps=16, hidden=200), 3: dict(levels=3, steps=8, hidden=400)},
    "kirichenko": {1: dict(levels=2, steps=16, hidden=200, **_KIRICHENKO),
                   3: dict(levels=3, steps=8, hidden=400, **_KIRICHENKO)},
    "kirichenko_cpu": {1: dict(levels=2, steps=4, hidden=64, **_KIRICHENKO),
                       3: dict(levels=2, steps=4, hidden=64, **_KIRICHENKO)},
    "nalisnick": {1: dict(levels=2, steps=16, hidden=200, **_NALISNICK),
                  3: dict(levels=3, steps=8, hidden=400, **_NALISNICK)},
    "nalisnick_cpu": {1: dict(levels=2, steps=4, hidden=64, **_NALISNICK),
                      3: dict(levels=2, steps=4, hidden=64, **_NALISNICK)},
}

# Kirichenko et al. App. E (RMSprop; no lr decay; our 200-step warm-up stays).
_KIRICHENKO_RECIPE = dict(optimizer="rmsprop", learning_rate=5e-5, batch_size=32, epochs=80,
                          halve_every_epochs=None)
_RECIPES = {preset: {1: _KIRICHENKO_RECIPE, 3: _KIRICHENKO_RECIPE}
            for preset in ("kirichenko", "kirichenko_cpu")}

# Nalisnick et al. App. A.1: RMSProp, lr 1e-5 for 100K steps halved at 80K and 90K, batch 32,
# "L2 regularization of 5e-2 to CIFAR" (coupled L2 on our per-image nats loss; the paper
# does not say on which loss scale). ``nalisnick_cpu``: the budget is the cpu preset's
# (about 2% of 100K steps), so lr 1e-3 (100x; 1e-4 left the CV-Glow untrained) and no decay.
# ``nalisnick`` has no warm-up and no gradient clipping (App. A.1 mentions neither);
# ``nalisnick_cpu`` keeps our flows' 200-step warm-up and clipping at 100 (its lr is 100x) and
# trains 0.3 epoch at ``cpu`` (562 steps on FashionMNIST, 469 on CIFAR-10) so that an experiment
# training all four flows fits in about an hour on 2 cores: one epoch took 36 / 31 min for the
# FashionMNIST Glow / CV-Glow and 46 / 62 min on CIFAR-10, alone, on 2026-12-02 (179 min for
# nalisnick_decomposition; experiments/results/nalisnick_cpu.md). The Nalisnick experiments
# share these checkpoints.
_NALISNICK_GREY = dict(optimizer="rmsprop", learning_rate=1e-5, batch_size=32,
                       num_steps=100_000, decay_steps=(80_000, 90_000), decay_factor=0.5,
                       halve_every_epochs=None, warmup_steps=0, clip_grad_norm=None)
_NALISNICK_CPU_GREY = dict(optimizer="rmsprop", learning_rate=1e-3, batch_size=32,
                           halve_every_epochs=None)
_RECIPES["nalisnick"] = {1: _NALISNICK_GREY, 3: dict(_NALISNICK_GREY, weight_decay=5e-2)}
_RECIPES["nalisnick_cpu"] = {1: _NALISNICK_CPU_GREY,
                             3: dict(_NALISNICK_CPU_GREY, weight_decay=5e-2),
                             "budgets": {"cpu": {"epochs": 0.3}}}


_TRAIN_DEFAULTS = dict(warmup_steps=200, clip_grad_norm=100.0)
_BUDGETS = {"cpu": {"epochs": 1}}

GLOW_SPEC = ModelSpec(
    name="glow", module=Glow, presets=_PRESETS, defaults={"additive": False},
    train_defaults=_TRAIN_DEFAULTS, budgets=_BUDGETS, recipes=_RECIPES,
    rose_layers=("*invconv*",), rose_fisher="diag",   # ROSE App. B.2: DIAG on InvConv
    has_batchnorm=False,
    about="Glow (Kingma & Dhariwal 2018): ActNorm, LU 1x1 convs, affine couplings.")

CV_GLOW_SPEC = ModelSpec(
    name="cv_glow", module=Glow, presets=_PRESETS, defaults={"additive": True},
    train_defaults=_TRAIN_DEFAULTS, budgets=_BUDGETS, recipes=_RECIPES,
    rose_layers=("*invconv*",), rose_fisher="diag",   # ROSE App. B.2: DIAG on InvConv
    has_batchnorm=False,
    about="CV-Glow (Nalisnick et al. 2019): Glow with additive couplings (constant volume).")


def _build(spec: ModelSpec, preset: str, image_shape, overrides) -> Glow:
  """``spec.module(image_shape=..., **{**defaults, **preset settings, **overrides})``."""
  choose(f"{spec.name} preset", preset, spec.presets)
  shape = tuple(int(s) for s in image_shape)
  settings = spec.presets[preset][1 if shape[-1] == 1 else 3]
  return spec.module(image_shape=shape, **{**spec.defaults, **settings, **overrides})


def make_glow(preset: str, image_shape, **overrides) -> Glow:
  """``Glow`` (affine couplings) with the settings of ``preset`` (``smoke``, ``cpu``,
  ``paper``, ``kirichenko``, ``kirichenko_cpu``) for grey or colour ``image_shape``;
  ``overrides`` replace any attribute."""
  return _build(GLOW_SPEC, preset, image_shape, overrides)


def make_cv_glow(preset: str, image_shape, **overrides) -> Glow:
  """CV-Glow: ``make_glow`` with additive couplings (constant volume given the 1x1 convs)."""
  return _build(CV_GLOW_SPEC, preset, image_shape, overrides)
