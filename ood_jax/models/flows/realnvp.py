"""RealNVP (Dinh et al. 2017) with BatchNorm, as used by Song et al. and Kirichenko et al.

Pixels ``y = (x + u) / 256`` go through the logit pre-transform (constraint 0.9, alpha 0.05;
its log-det counts), then ``num_scales`` scales. Every scale but the last: couplings on the
spatial mask (3 alternating checkerboards; 4 for ``mask='cycle'``, one per quadrant), squeeze
2x2, 3 couplings on ``channel_mask`` (alternating channel halves), then half the channels are
factored out as a latent; the last scale: 4 spatial couplings. ``num_couplings = k`` makes
every scale's spatial group k couplings instead (the channel groups keep 3): Kirichenko et
al.'s "RealNVP with 8 coupling layers and no squeeze layers" is ``num_scales=1,
num_couplings=8``, their "small RealNVP with 2 coupling layers and checkerboard masks"
``num_scales=1, num_couplings=2``, the "3-layer RealNVP with horizontal masks"
``num_scales=1, num_couplings=3, mask='horizontal'``. Coupling i of a group uses mask
variant ``index = i`` (checkerboard/horizontal/vertical/channel alternate; cycle moves on
one quadrant). Each coupling is affine with a ``ResNetSTNet`` (``stnets.py``) and, with
``flow_batchnorm`` (default, as RealNVP), is followed by a ``BatchNormFlow``. st-net widths:
``channels * width_growth ** s`` for the spatial couplings of scale s and
``channels * width_growth ** (s + 1)`` for its channel-wise ones (the public PyTorch port:
Kirichenko's 2-scale, 6-block, 64-channel FashionMNIST model then has 14.7 M parameters).
Every latent has a standard-normal prior.

st-net and coupling options (Kirichenko et al.): ``skip=False`` drops the st-nets' 1x1 skip
convs (App. L's baseline), ``bottleneck = l`` inserts the dense bottleneck after the middle
block (linear; ``bottleneck_relu=True`` puts a ReLU in it), ``shift_first=True`` makes every
coupling ``y = (x + t) * exp(s)`` (their reference code's coupling, in which ``-t`` estimates
the masked input); see ``stnets.py`` and ``coupling.py``.

Masks (Kirichenko et al.'s ablations): ``mask`` replaces the kind of every spatial coupling
(``checkerboard`` default, ``horizontal``, ``vertical``, ``cycle``, ``channel``);
``channel_mask`` that of the couplings after each squeeze (``channel`` default).

BatchNorm (in the st-networks with ``st_batchnorm``, and the flow layers): ``train=True``
uses the batch statistics, so a sample's likelihood depends on its batch (the log-det is that
of the per-sample map with the statistics held fixed); ``train=False`` the running averages.
Running averages change only when the caller passes ``mutable=['batch_stats']``.

Every scale is a ``Chain`` of bijector layers (``forward_and_log_det`` /
``inverse_and_log_det``); the couplings ``sow`` their input, ``s``, ``t`` and output
(``mutable=['intermediates']``). Model spec: ``SPEC`` (``'realnvp'``).

Presets (``make_realnvp`` / ``SPEC.presets``; ``preset``: grey / colour settings):

* ``paper`` (Song et al. = Dinh's settings): 2 scales (downscale once); 4 residual blocks,
  32 channels (grey) / 8 blocks, 64 channels (colour).
* ``kirichenko`` (Kirichenko et al.): 2 scales, 6 blocks (grey) / 3 scales, 8 blocks
  (colour) (App. E); st-net width 64 and width growth 2 (the paper is silent: their
  reference code's default ``mid_channels=64``, doubled at each squeeze); no ``BatchNormFlow``
  layers between the couplings (the reference has none; its st-nets keep BatchNorm) and
  ``shift_first`` (the reference's coupling). Recipe (``SPEC.recipes``, App. E): Adam,
  batch 32, lr 5e-5, 80 epochs, no weight decay (grey) / lr 1e-4, 100 epochs, weight
  decay 5e-5 (colour); no lr decay, as the reference. Not as the reference: our flows' own
  200-step linear warm-up and clipping at norm 100 stay on (the reference has no warm-up; it
  clips at 100 too); its weight decay applies only to the weight-norm ``g`` parameters (and,
  by its argparse default, to the grey models too), ours (coupled L2, torch's Adam) to every
  parameter of the colour model only, as the paper states it.
* ``kirichenko_cpu``: the ``kirichenko`` flags on the ``cpu`` preset's size (2 scales,
  1 block, 16 channels, ``width_growth=1``, grey and colour); the same recipe.
* ``cpu``: the Song architecture shrunk for a 2-core CPU: 2 scales, 1 residual block, 16
  channels at every scale (``width_growth=1``); a batch-64 FashionMNIST step is ~0.8 s on
  2 idle cores (XLA:CPU is op-overhead bound at this size: 2 blocks / 32 channels took ~2.5x).
* ``smoke``: 2 scales, 1 block, 8 channels, no st-net BatchNorm (tests).

Not reproduced from the reference code (see also ``stnets.py``): weight-normalised convs,
the doubling of the st-net input after its BatchNorm for checkerboard couplings, and its
random (not zero) init of the st-nets' last conv.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from ood_jax.errors import InvalidInputError
from ood_jax.models.flows.batchnorm_flow import BatchNormFlow
from ood_jax.models.flows.chain import Chain
from ood_jax.models.flows.coupling import Coupling
from ood_jax.models.flows.flow_model import FlowModel, check_image_shape, gaussian_log_density
from ood_jax.models.flows.logit import LogitTransform
from ood_jax.models.flows.masks import MASK_KINDS, mask_pair
from ood_jax.models.flows.squeeze import Squeeze
from ood_jax.models.flows.stnets import ResNetSTNet
from ood_jax.models.spec import ModelSpec
from ood_jax.registry import choose


def group_size(kind: str, last: bool = False, override: Optional[int] = None) -> int:
  """Couplings in a group of mask ``kind``: ``override`` if given, else 3 (RealNVP), 4 for
  ``cycle`` or the last scale."""
  if override is not None:
    return int(override)
  return 4 if kind == "cycle" or last else 3


def coupling_features(kind: str, c: int) -> int:
  """st-net output channels of an affine coupling on ``c`` channels with mask ``kind``."""
  return 2 * (c - c // 2) if kind == "channel" else 2 * c


class RealNVPScale(nn.Module):
  """One scale: a ``Chain`` of the spatial couplings (+ squeeze and the channel couplings),
  then, unless ``last``, half the channels factored out as a latent.

  ``encode(h, train)`` -> ``(h_kept, z or None, logdet)``;
  ``decode(h_kept, z)`` -> ``(h, log|det dh/d(h_kept, z)|)`` (eval mode).
  """
  last: bool
  width: int
  num_blocks: int
  mask: str = "checkerboard"
  channel_mask: str = "channel"
  width_growth: int = 2
  st_batchnorm: bool = True
  flow_batchnorm: bool = True
  bottleneck: Optional[int] = None
  momentum: float = 0.9
  num_couplings: Optional[int] = None
  skip: bool = True
  bottleneck_relu: bool = False
  shift_first: bool = False

  @nn.nowrap
  def _group(self, prefix: str, kind: str, c: int, width: int, size: int,
             **where) -> list[nn.Module]:
    layers = []
    for i in range(size):
      net = ResNetSTNet(coupling_features(kind, c), width, self.num_blocks, self.st_batchnorm,
                        self.bottleneck, self.momentum, skip=self.skip,
                        bottleneck_relu=self.bottleneck_relu, parent=None)
      layers.append(Coupling(mask=kind, index=i, st_net=net, shift_first=self.shift_first,
                             name=f"{prefix}coupling{i}", **where))
      if self.flow_batchnorm:
        layers.append(BatchNormFlow(momentum=self.momentum, name=f"{prefix}bn{i}", **where))
    return layers

  @nn.nowrap
  def _layers(self, c: int, **where) -> list[nn.Module]:
    """Spatial chain, then (not ``last``) squeeze and channel chain; ``c`` input channels
    (``where``: ``parent=None`` for unbound probes)."""
    spatial = self._group("", self.mask, c, self.width,
                          group_size(self.mask, self.last, self.num_couplings), **where)
    layers = [Chain(spatial, name="spatial", **where)]
    if not self.last:
      channel = self._group("channel_", self.channel_mask, 4 * c,
                            self.width * self.width_growth, group_size(self.channel_mask),
                            **where)
      layers += [Squeeze(name="squeeze", **where), Chain(channel, name="channel", **where)]
    return layers

  @nn.compact
  def _chain(self, c: int) -> Chain:
    return Chain(self._layers(c), name="chain")

  def encode(self, h: jax.Array, train: bool = False):
    h, logdet = self._chain(h.shape[-1]).forward_and_log_det(h, train)
    if self.last:
      return h, None, logdet
    keep = h.shape[-1] // 2
    return h[..., :keep], h[..., keep:], logdet

  def decode(self, h: jax.Array, z: Optional[jax.Array] = None):
    if self.last:
      return self._chain(h.shape[-1]).inverse_and_log_det(h)
    c = (h.shape[-1] + z.shape[-1]) // 4  # channels at this scale's input
    return self._chain(c).inverse_and_log_det(jnp.concatenate([h, z], axis=-1))

  @nn.nowrap
  def constant_log_det(self, train: bool) -> bool:
    """From the layers' declarations (affine couplings: never)."""
    return Chain(self._layers(4, parent=None), parent=None).constant_log_det(train)


class RealNVP(FlowModel):
  """Multi-scale RealNVP with BatchNorm (see the module docstring for every attribute)."""
  image_shape: tuple[int, int, int] = (28, 28, 1)
  num_scales: int = 2
  num_blocks: int = 4
  channels: int = 32
  width_growth: int = 2
  mask: str = "checkerboard"
  channel_mask: str = "channel"
  st_batchnorm: bool = True
  flow_batchnorm: bool = True
  bottleneck: Optional[int] = None
  alpha: float = 0.05
  bn_momentum: float = 0.9
  num_couplings: Optional[int] = None
  skip: bool = True
  bottleneck_relu: bool = False
  shift_first: bool = False

  def __post_init__(self):
    if int(self.num_scales) < 1 or int(self.num_blocks) < 1 or int(self.channels) < 1:
      raise InvalidInputError(
          f"RealNVP: num_scales, num_blocks and channels must be >= 1, got {self.num_scales},"
          f" {self.num_blocks}, {self.channels}.")
    if self.num_couplings is not None and int(self.num_couplings) < 1:
      raise InvalidInputError(
          f"RealNVP: num_couplings must be >= 1 or None, got {self.num_couplings}.")
    shape = check_image_shape(self.image_shape, int(self.num_scales) - 1, "RealNVP")
    for kind in (self.mask, self.channel_mask):
      choose("RealNVP mask", kind, MASK_KINDS)
    h, w, c = shape
    for s in range(int(self.num_scales)):  # every mask must fit its scale: fail early
      mask_pair(self.mask, (h, w, c), 0)
      if s < self.num_scales - 1:
        mask_pair(self.channel_mask, (h // 2, w // 2, 4 * c), 0)
        h, w, c = h // 2, w // 2, 2 * c
    super().__post_init__()

  def setup(self):
    self.logit = LogitTransform(self.alpha)
    self.scales = [
        RealNVPScale(last=s == self.num_scales - 1, width=self.channels * self.width_growth ** s,
                     num_blocks=self.num_blocks, mask=self.mask, channel_mask=self.channel_mask,
                     width_growth=self.width_growth, st_batchnorm=self.st_batchnorm,
                     flow_batchnorm=self.flow_batchnorm, bottleneck=self.bottleneck,
                     momentum=self.bn_momentum, num_couplings=self.num_couplings,
                     skip=self.skip, bottleneck_relu=self.bottleneck_relu,
                     shift_first=self.shift_first)
        for s in range(self.num_scales)]

  @property
  def constant_volume(self) -> bool:
    """Whether ``log|det dz/dy|`` is the same for every input in both modes (never: the
    affine couplings and the logit depend on it); from the layers' ``constant_log_det``."""
    layers = [LogitTransform(self.alpha, parent=None)] + [
        RealNVPScale(s == self.num_scales - 1, 1, 1, self.mask, self.channel_mask,
                     flow_batchnorm=self.flow_batchnorm, num_couplings=self.num_couplings,
                     parent=None)
        for s in range(self.num_scales)]
    chain = Chain(layers, parent=None)
    return chain.constant_log_det(False) and chain.constant_log_det(True)

  def latent_shapes(self) -> list[tuple[int, int, int]]:
    """Per-image shapes of the factored-out latents, then the last scale's."""
    h, w, c = self.image_shape
    shapes = []
    for _ in range(self.num_scales - 1):
      h, w, c = h // 2, w // 2, 2 * c
      shapes.append((h, w, c))
    return shapes + [(h, w, c)]

  def encode_unit(self, y: jax.Array, train: bool = False):
    """``y`` in ``[0, 1)`` -> ``(latents, log p(z), log|det dz/dy|)`` (nats ``[N]``)."""
    h, logdet = self.logit.forward_and_log_det(y, train)
    eps = []
    for scale in self.scales:
      h, z, ld = scale.encode(h, train)
      logdet = logdet + ld
      if z is not None:
        eps.append(z)
    eps.append(h)
    log_pz = sum(gaussian_log_density(z) for z in eps)
    return eps, log_pz, logdet

  def decode_unit(self, eps: list[jax.Array], temperature: float = 1.0) -> jax.Array:
    """Inverse of ``encode_unit`` in eval mode with latents ``temperature * eps``."""
    h = temperature * eps[-1]
    for s in reversed(range(self.num_scales)):
      z = None if s == self.num_scales - 1 else temperature * eps[s]
      h, _ = self.scales[s].decode(h, z)
    return self.logit.inverse_and_log_det(h)[0]


_KIRICHENKO = dict(flow_batchnorm=False, shift_first=True)

_PRESETS = {
    "smoke": {1: dict(num_scales=2, num_blocks=1, channels=8, st_batchnorm=False),
              3: dict(num_scales=2, num_blocks=1, channels=8, st_batchnorm=False)},
    "cpu": {1: dict(num_scales=2, num_blocks=1, channels=16, width_growth=1),
            3: dict(num_scales=2, num_blocks=1, channels=16, width_growth=1)},
    "paper": {1: dict(num_scales=2, num_blocks=4, channels=32),
              3: dict(num_scales=2, num_blocks=8, channels=64)},
    "kirichenko": {1: dict(num_scales=2, num_blocks=6, channels=64, **_KIRICHENKO),
                   3: dict(num_scales=3, num_blocks=8, channels=64, **_KIRICHENKO)},
    "kirichenko_cpu": {
        1: dict(num_scales=2, num_blocks=1, channels=16, width_growth=1, **_KIRICHENKO),
        3: dict(num_scales=2, num_blocks=1, channels=16, width_growth=1, **_KIRICHENKO)},
}

# Kirichenko et al. App. E (Adam; no lr decay, as the reference; our 200-step warm-up stays).
_KIRICHENKO_RECIPE = {
    1: dict(optimizer="adam", learning_rate=5e-5, batch_size=32, epochs=80,
            halve_every_epochs=None, weight_decay=0.0),
    3: dict(optimizer="adam", learning_rate=1e-4, batch_size=32, epochs=100,
            halve_every_epochs=None, weight_decay=5e-5),
}


SPEC = ModelSpec(
    name="realnvp", module=RealNVP, presets=_PRESETS,
    train_defaults=dict(warmup_steps=200, clip_grad_norm=100.0), budgets={"cpu": {"epochs": 1}},
    recipes={"kirichenko": _KIRICHENKO_RECIPE, "kirichenko_cpu": _KIRICHENKO_RECIPE},
    rose_layers=None, has_batchnorm=lambda m: bool(m.st_batchnorm or m.flow_batchnorm),
    about="RealNVP (Dinh et al. 2017): logit, affine couplings with ResNet st-nets, BatchNorm.")


def make_realnvp(preset: str, image_shape, **overrides) -> RealNVP:
  """``RealNVP`` with the settings of ``preset`` (``smoke``, ``cpu``, ``paper``,
  ``kirichenko``, ``kirichenko_cpu``) for grey or colour ``image_shape``; ``overrides``
  replace any attribute."""
  choose("realnvp preset", preset, SPEC.presets)
  shape = tuple(int(s) for s in image_shape)
  settings = SPEC.presets[preset][1 if shape[-1] == 1 else 3]
  return RealNVP(image_shape=shape, **{**SPEC.defaults, **settings, **overrides})
