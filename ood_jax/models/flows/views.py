"""Image-space views of a flow's latents and coupling layers (Kirichenko et al., App. G, M.1).

"We revert all squeezing operations of the flow and visualize unsqueeze(z). Similarly, for
visualization of coupling layer activations and scale and shift parameters predicted by
st-network, we revert all squeezing operations and join all factored out tensors (i.e., we
feed the corresponding tensor through inverse sub-flow without applying coupling layers or
invertible convolutions)." (App. G.)

Conventions:

* Skeleton. Between the bijector layers that change values (logit, couplings, BatchNorm,
  ActNorm, 1x1 convs), RealNVP and Glow only reshape: 2x2 squeezes (``squeeze.py``) and
  splits, which keep the first ``C // 2`` channels and factor out the rest as a latent. Both
  alternate them, squeeze first: RealNVP with S scales has ``[squeeze, split] * (S - 1)``,
  Glow with L levels ``[squeeze, split] * (L - 1) + [squeeze]``. ``skeleton(model)`` reads
  this off ``model.image_shape`` and ``model.latent_shapes()`` (and checks it); a
  *position* ``k`` is the number of skeleton ops applied before a tensor (its shape tells
  it: ``shapes(model)[k]``).
* Space. Every view is of tensors after the model's pre-transform (RealNVP's logit, Glow's
  shift ``y - 1/2`` or logit): joining the latents of a flow whose other layers are all
  identities gives back the pre-transformed input exactly. Pixels enter as uint8 ``x``,
  dequantised ``y = (x + u) / 256`` with ``u ~ U[0, 1)`` from ``rng`` (``rng=None``: the bin
  centres, ``u = 1/2``), or directly as ``y`` in ``[0, 1)``.
* Latents. ``raw`` latents are the tensors factored out at each split and the last one,
  before any learned prior standardises them (Glow's conditional priors); for RealNVP (a
  standard-normal prior) they equal ``encode_unit``'s ``eps``. ``latent_image`` joins the raw
  latents, i.e. unsqueeze(z).
* Joining (``join``): walking the skeleton back from position ``k``: unsqueeze after a
  squeeze; after a split, concatenate the tensor factored out there (``fills``; zeros when
  ``None``). Coupling inputs/outputs are joined with the raw latents of the same forward
  pass; ``s``, ``t`` and the masks with zeros, so they stay zero outside the layer's
  transformed entries (``out_mask``).
* Couplings. ``coupling_intermediates`` returns one ``CouplingView`` per coupling, in the
  order of the forward pass, each array ``N x H x W x C`` in image space (float32 numpy);
  ``x_zero = x_in - y_out * exp(-s)`` on the transformed entries (0 elsewhere) is the input
  the layer maps to 0, whatever the coupling's convention: ``-t`` for
  ``y = (x + t) * exp(s)`` (Kirichenko et al.'s, ``shift_first``), ``-t * exp(-s)`` for
  ``y = x * exp(s) + t`` (this library's default), ``-t`` for an additive coupling. It is the
  st-network's estimate of the masked input (their section 4).
* Masks. ``latent_mask(model, image_mask)`` pushes an ``H x W`` or ``H x W x C`` bool mask
  through the skeleton forward ("we apply the squeeze layers from the flow to the 32x32
  mask", App. M.1): one bool array per latent, the shapes of ``latent_shapes()``; every
  image entry lands in exactly one latent entry. ``resample_latents`` redraws the
  standardised latents (``eps``) under the mask from the prior at ``temperature`` and
  inverts the flow in eval mode.

Everything runs the model's own ``encode_unit`` / ``decode_unit`` with ``variables`` (eval
mode unless ``train=True``: BatchNorm with the statistics of the batch given), jitted once
per model, mode and batch shape (so batches of one size share a compile); bad input raises
``InvalidInputError`` before any work.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ood_jax.errors import InvalidInputError
from ood_jax.models.flows.chain import Chain
from ood_jax.models.flows.coupling import Coupling
from ood_jax.models.flows.flow_model import quantize
from ood_jax.models.flows.masks import mask_pair
from ood_jax.models.flows.squeeze import squeeze2x2, unsqueeze2x2

SQUEEZE, SPLIT = "squeeze", "split"


# ----------------------------------------------------------------------------- skeleton


def _step(shape: tuple[int, int, int], op: str) -> tuple[int, int, int]:
  h, w, c = shape
  return (h // 2, w // 2, 4 * c) if op == SQUEEZE else (h, w, c // 2)


def skeleton(model) -> tuple[str, ...]:
  """The squeezes and splits of ``model``, in forward order (module docstring), checked
  against ``model.latent_shapes()``."""
  image = tuple(int(s) for s in model.image_shape)
  latents = [tuple(int(s) for s in shp) for shp in model.latent_shapes()]
  n_splits = len(latents) - 1
  ratio = image[0] // latents[-1][0]
  n_squeezes = int(round(math.log2(ratio))) if ratio >= 1 else -1
  if n_squeezes not in (n_splits, n_splits + 1) or 2 ** n_squeezes != ratio:
    raise InvalidInputError(
        f"views: {type(model).__name__} with latents {latents} for {image} images is not an"
        " alternation of squeezes and splits.")
  ops = (SQUEEZE, SPLIT) * n_splits + (SQUEEZE,) * (n_squeezes - n_splits)
  shape, j = image, 0
  for op in ops:
    if op == SPLIT:
      c = shape[2]
      if (shape[0], shape[1], c - c // 2) != latents[j]:
        raise InvalidInputError(
            f"views: split {j} of {type(model).__name__} factors out {latents[j]}, not the"
            f" second half of {shape}.")
      j += 1
    shape = _step(shape, op)
  if shape != latents[-1]:
    raise InvalidInputError(
        f"views: the last latent of {type(model).__name__} is {latents[-1]}, the skeleton"
        f" gives {shape}.")
  return ops


def shapes(model) -> list[tuple[int, int, int]]:
  """Per-image tensor shape at every position ``0 .. len(skeleton(model))``."""
  out = [tuple(int(s) for s in model.image_shape)]
  for op in skeleton(model):
    out.append(_step(out[-1], op))
  return out


def position_of(model, shape) -> int:
  """The skeleton position whose tensors have per-image ``shape`` (unique: the height gives
  the squeezes, the channels then the splits)."""
  shape = tuple(int(s) for s in shape)
  found = [k for k, s in enumerate(shapes(model)) if s == shape]
  if not found:
    raise InvalidInputError(f"views: no position of {type(model).__name__} has shape {shape}.")
  return found[0]


def _splits_before(ops: Sequence[str], position: int) -> int:
  return sum(op == SPLIT for op in ops[:position])


def join(model, h, position: int, fills: Optional[Sequence] = None) -> np.ndarray:
  """``N x shape_k`` tensor ``h`` at ``position`` -> ``N x H x W x C`` image space.

  Walks the skeleton back: unsqueeze after a squeeze; after split ``j`` concatenate
  ``fills[j]`` (``N x latent_shapes()[j]``) behind the kept channels, or zeros if ``fills``
  is None. ``fills`` may be longer than the splits before ``position`` (extra ones unused).
  """
  ops = skeleton(model)
  position = int(position)
  if not 0 <= position <= len(ops):
    raise InvalidInputError(f"views.join: position must be in 0..{len(ops)}, got {position}.")
  h = jnp.asarray(h)
  want = shapes(model)[position]
  if h.ndim != 4 or tuple(h.shape[1:]) != want:
    raise InvalidInputError(
        f"views.join: expected N x {want} at position {position}, got {tuple(h.shape)}.")
  j = _splits_before(ops, position)
  latents = model.latent_shapes()
  if fills is not None and len(fills) < j:
    raise InvalidInputError(f"views.join: {j} factored-out tensors needed, got {len(fills)}.")
  for op in reversed(ops[:position]):
    if op == SQUEEZE:
      h = unsqueeze2x2(h)
    else:
      j -= 1
      if fills is None:
        z = jnp.zeros((h.shape[0], *latents[j]), h.dtype)
      else:
        z = jnp.asarray(fills[j], h.dtype)
        if tuple(z.shape) != (h.shape[0], *latents[j]):
          raise InvalidInputError(
              f"views.join: factored-out tensor {j} must be {(h.shape[0], *latents[j])}, got"
              f" {tuple(z.shape)}.")
      h = jnp.concatenate([h, z], axis=-1)
  return np.asarray(h)


def join_latents(model, latents: Sequence) -> np.ndarray:
  """unsqueeze(z): the raw latents (``N x latent_shapes()[j]`` each) joined into
  ``N x H x W x C``, undoing only the squeezes and splits."""
  ops = skeleton(model)
  if len(latents) != len(model.latent_shapes()):
    raise InvalidInputError(
        f"views: {len(model.latent_shapes())} latents expected, got {len(latents)}.")
  return join(model, latents[-1], len(ops), list(latents[:-1]))


def latent_mask(model, image_mask) -> list[np.ndarray]:
  """The latent entries of an image-space bool mask (``H x W`` or ``H x W x C``): one bool
  array per latent, shaped as ``model.latent_shapes()``; the masks of all latents hold as
  many True entries as the (channel-broadcast) image mask."""
  hwc = tuple(int(s) for s in model.image_shape)
  m = np.asarray(image_mask)
  if m.dtype != bool:
    raise InvalidInputError(f"latent_mask: expected a bool mask, got dtype {m.dtype}.")
  if m.ndim == 2 and m.shape == hwc[:2]:
    m = np.broadcast_to(m[:, :, None], hwc)
  if m.shape != hwc:
    raise InvalidInputError(f"latent_mask: expected a {hwc[:2]} or {hwc} mask, got {m.shape}.")
  h = m[None].astype(np.float32)
  out = []
  for op in skeleton(model):
    if op == SQUEEZE:
      h = np.asarray(squeeze2x2(h))
    else:
      c = h.shape[-1]
      out.append(h[0, ..., c // 2:] > 0.5)
      h = h[..., :c // 2]
  return out + [h[0] > 0.5]


def square_mask(hwc, size: int) -> np.ndarray:
  """``H x W`` bool mask of the centred ``size x size`` square (App. M.1: 10 x 10 of 32 x 32;
  the top-left corner is at ``(H - size) // 2``)."""
  h, w = int(hwc[0]), int(hwc[1])
  size = int(size)
  if not 1 <= size <= min(h, w):
    raise InvalidInputError(f"square_mask: size must be in 1..{min(h, w)}, got {size}.")
  m = np.zeros((h, w), bool)
  a, b = (h - size) // 2, (w - size) // 2
  m[a:a + size, b:b + size] = True
  return m


# ----------------------------------------------------------------------------- running the flow


def dequantize(x_uint8, rng: Optional[jax.Array] = None) -> jax.Array:
  """``(x + u) / 256``, ``u ~ U[0, 1)`` from ``rng`` (``None``: ``u = 1/2``)."""
  x = np.asarray(x_uint8)
  if x.dtype != np.uint8 or x.ndim != 4:
    raise InvalidInputError(
        f"views: expected uint8 images N x H x W x C, got {x.dtype} {x.shape}.")
  u = 0.5 if rng is None else jax.random.uniform(rng, x.shape, jnp.float32)
  return (jnp.asarray(x, jnp.float32) + u) / 256.0


def _inputs(model, x_uint8, y, rng) -> jax.Array:
  if (x_uint8 is None) == (y is None):
    raise InvalidInputError(
        "views: give exactly one of x_uint8 (uint8 images) and y (pixels in [0, 1)).")
  y = dequantize(x_uint8, rng) if y is None else jnp.asarray(y, jnp.float32)
  hwc = tuple(int(s) for s in model.image_shape)
  if y.ndim != 4 or tuple(y.shape[1:]) != hwc or y.shape[0] < 1:
    raise InvalidInputError(f"views: expected images N x {hwc}, got {tuple(y.shape)}.")
  return y


def _is_stage_chain(mdl, method: str) -> bool:
  """The chain of a whole RealNVP scale / Glow level (its output is split after it)."""
  return (method == "forward_and_log_det" and isinstance(mdl, Chain) and mdl.name == "chain"
          and len(mdl.scope.path) == 2)


@dataclasses.dataclass(frozen=True)
class _Layer:
  """A coupling as found in the forward pass."""
  path: tuple[str, ...]
  mask: str
  index: int


_LAYERS: dict = {}


def _coupling_layers(model, variables, y, train: bool) -> list[_Layer]:
  """The couplings in forward order (an abstract trace, no compute; cached per model, mode
  and image shape)."""
  key = (model, bool(train), tuple(y.shape[1:]))
  if key not in _LAYERS:
    _LAYERS[key] = _trace_couplings(model, variables, y, train)
  return _LAYERS[key]


def _trace_couplings(model, variables, y, train: bool) -> list[_Layer]:
  found = []

  def record(mdl, method):
    if isinstance(mdl, Coupling) and method == "forward_and_log_det":
      found.append(_Layer(tuple(mdl.scope.path), mdl.mask, int(mdl.index)))
    return False

  jax.eval_shape(lambda v, y_: model.apply(v, y_, train, method=model.encode_unit,
                                           capture_intermediates=record), variables, y[:1])
  return found


def _stage_outputs(tree) -> list[jax.Array]:
  """The captured stage-chain outputs, in the order of their stage index."""
  items = []
  for top, sub in tree.items():
    if isinstance(sub, dict) and "chain" in sub and "forward_and_log_det" in sub["chain"]:
      m = re.search(r"(\d+)$", top)
      h = sub["chain"]["forward_and_log_det"][0][0]
      items.append((int(m.group(1)) if m else len(items), h))
  return [h for _, h in sorted(items, key=lambda t: t[0])]


@functools.lru_cache(maxsize=64)
def _jitted(model, what: str, train: bool = False):
  """The jitted apply ``what`` of ``model`` (one compile per model, mode and batch shape):
  ``'encode'`` (with the intermediates and the stage outputs) or ``'decode'``."""
  if what == "encode":
    return jax.jit(lambda v, y: model.apply(v, y, train, method=model.encode_unit,
                                            mutable=["intermediates"],
                                            capture_intermediates=_is_stage_chain))
  return jax.jit(lambda v, eps: model.apply(v, eps, 1.0, method=model.decode_unit))


def _encode(model, variables, y, train: bool):
  """``(eps, raw latents, intermediates tree)`` of one forward pass."""
  (eps, _, _), state = _jitted(model, "encode", bool(train))(variables, y)
  tree = state["intermediates"]
  latents = model.latent_shapes()
  outs = _stage_outputs(tree)
  if len(outs) != len(latents):
    raise InvalidInputError(
        f"views: found {len(outs)} stage outputs in {type(model).__name__}, expected"
        f" {len(latents)} (one per scale/level).")
  raw = [h[..., h.shape[-1] // 2:] for h in outs[:-1]] + [outs[-1]]
  for j, (z, shp) in enumerate(zip(raw, latents)):
    if tuple(z.shape[1:]) != tuple(shp):
      raise InvalidInputError(f"views: raw latent {j} has shape {z.shape[1:]}, expected {shp}.")
  return eps, raw, tree


def encode(model, variables, x_uint8=None, *, y=None, train: bool = False,
           rng: Optional[jax.Array] = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """``(eps, raw)`` of ``x_uint8`` (dequantised with ``rng``) or ``y``: the standardised
  latents of ``encode_unit`` and the raw ones (module docstring), one float32 array
  ``N x latent_shapes()[j]`` per latent each."""
  y = _inputs(model, x_uint8, y, rng)
  eps, raw, _ = _encode(model, variables, y, bool(train))
  return [np.asarray(e) for e in eps], [np.asarray(z) for z in raw]


def raw_latents(model, variables, x_uint8=None, *, y=None, train: bool = False,
                rng: Optional[jax.Array] = None) -> list[np.ndarray]:
  """The raw latents (module docstring) of ``x_uint8`` (dequantised with ``rng``) or ``y``:
  one float32 array ``N x latent_shapes()[j]`` per latent."""
  return encode(model, variables, x_uint8, y=y, train=train, rng=rng)[1]


def latent_image(model, variables, x_uint8=None, *, y=None, train: bool = False,
                 rng: Optional[jax.Array] = None, k: int = 1) -> np.ndarray:
  """unsqueeze(z) of ``x_uint8`` or ``y``: ``N x H x W x C`` float32.

  ``k > 1`` (with ``x_uint8`` and ``rng``): the average over ``k`` dequantisation draws,
  ``1/k sum_i unsqueeze(f(x + u_i))`` (Kirichenko et al. Fig. 2, K = 40); eval mode runs
  the ``k * N`` images as one batch, train mode one draw after the other (each batch
  normalised with its own N images).
  """
  k = int(k)
  if k < 1:
    raise InvalidInputError(f"latent_image: k must be >= 1, got {k}.")
  if k > 1 and (x_uint8 is None or rng is None):
    raise InvalidInputError(
        "latent_image: k > 1 averages dequantisation draws: give x_uint8 and rng.")
  if k == 1:
    return join_latents(model, raw_latents(model, variables, x_uint8, y=y, train=train, rng=rng))
  x = np.asarray(x_uint8)
  n = x.shape[0]
  keys = jax.random.split(rng, k)
  if train:
    acc = sum(latent_image(model, variables, x, train=True, rng=key) for key in keys)
    return (acc / k).astype(np.float32)
  y = jnp.concatenate([dequantize(x, key) for key in keys])
  img = latent_image(model, variables, y=y)
  return img.reshape(k, n, *img.shape[1:]).mean(axis=0).astype(np.float32)


# ----------------------------------------------------------------------------- couplings


@dataclasses.dataclass(frozen=True)
class CouplingView:
  """One coupling layer's tensors in image space (``N x H x W x C`` float32, except
  ``out_mask``: ``H x W x C`` bool, the entries the layer transforms)."""
  name: str              # parameter path: 'scales_0/channel_coupling1', 'level_1/step3/coupling'
  scale: int             # the RealNVP scale / Glow level (the first path element's number)
  position: int          # skeleton ops applied before the layer (module docstring)
  mask: str
  index: int
  x_in: np.ndarray
  s: np.ndarray
  t: np.ndarray
  y_out: np.ndarray
  out_mask: np.ndarray

  @property
  def x_zero(self) -> np.ndarray:
    """The input the layer maps to 0 on its transformed entries (0 elsewhere): the
    st-network's estimate of the masked input, convention-free (module docstring)."""
    return np.where(self.out_mask, self.x_in - self.y_out * np.exp(-self.s), 0.0).astype(np.float32)


def _get(tree, path):
  for p in path:
    tree = tree[p]
  return tree


def _full_st(a: jax.Array, layer: _Layer, shape) -> jax.Array:
  """``s`` or ``t`` on every channel: the ``channel`` mask's ``Cb`` channels placed on the
  transformed half, zeros on the conditioning half (other masks: as sown)."""
  if a.shape[-1] == shape[-1]:
    return a
  out = np.asarray(mask_pair(layer.mask, tuple(shape), layer.index)[1])[0, 0] > 0.5
  idx = np.nonzero(out)[0]
  if idx.size != a.shape[-1]:
    raise InvalidInputError(f"views: {'/'.join(layer.path)} sows {a.shape[-1]} channels of s/t,"
                            f" its mask transforms {idx.size}.")
  return jnp.zeros((*a.shape[:-1], shape[-1]), a.dtype).at[..., idx].set(a)


def coupling_intermediates(model, variables, x_uint8=None, *, y=None, train: bool = False,
                           rng: Optional[jax.Array] = None) -> list[CouplingView]:
  """Every coupling's input, ``s``, ``t`` and output in image space, in forward order.

  ``x_in`` / ``y_out`` are joined with the raw latents factored out before the layer in the
  same pass, ``s`` / ``t`` / ``out_mask`` with zeros (module docstring); one forward pass of
  ``x_uint8`` (dequantised with ``rng``, default the bin centres) or ``y``.
  """
  y = _inputs(model, x_uint8, y, rng)
  train = bool(train)
  layers = _coupling_layers(model, variables, y, train)
  _, raw, tree = _encode(model, variables, y, train)
  views = []
  for layer in layers:
    sown = _get(tree, layer.path)
    x_in, s, t, y_out = (sown[key][0] for key in ("x_in", "s", "t", "y_out"))
    shape = tuple(x_in.shape[1:])
    pos = position_of(model, shape)
    s, t = _full_st(s, layer, shape), _full_st(t, layer, shape)
    out = jnp.asarray(mask_pair(layer.mask, shape, layer.index)[1])[None]
    m = re.search(r"(\d+)$", layer.path[0])
    views.append(CouplingView(
        name="/".join(layer.path), scale=int(m.group(1)) if m else 0, position=pos,
        mask=layer.mask, index=layer.index, x_in=join(model, x_in, pos, raw),
        s=join(model, s, pos), t=join(model, t, pos), y_out=join(model, y_out, pos, raw),
        out_mask=join(model, out, pos)[0] > 0.5))
  return views


# ----------------------------------------------------------------------------- resampling


def resample_eps(eps: Sequence, masks: Sequence, rng: jax.Array,
                 temperature: float = 1.0) -> list[jax.Array]:
  """Standardised latents with the entries under ``masks`` (one bool array per latent,
  ``latent_mask``) redrawn as ``temperature * N(0, 1)``; the others unchanged."""
  if len(eps) != len(masks):
    raise InvalidInputError(f"resample_eps: {len(eps)} latents but {len(masks)} masks.")
  keys = jax.random.split(rng, len(eps))
  out = []
  for j, (e, m, key) in enumerate(zip(eps, masks, keys)):
    e = jnp.asarray(e)
    m = np.asarray(m, bool)
    if tuple(m.shape) != tuple(e.shape[1:]):
      raise InvalidInputError(f"resample_eps: mask {j} is {m.shape}, latent {j} is {e.shape[1:]}.")
    new = float(temperature) * jax.random.normal(key, e.shape, e.dtype)
    out.append(jnp.where(m[None], new, e))
  return out


def resample_unit(model, variables, y, image_mask, rng: jax.Array,
                  temperature: float = 1.0) -> tuple[jax.Array, list[jax.Array], list[jax.Array]]:
  """``(y_new, eps_new, eps)``: ``y`` (pixels in ``[0, 1)``) encoded in eval mode, the
  standardised latents of ``image_mask`` redrawn (``resample_eps``), decoded in eval mode."""
  y = _inputs(model, None, y, None)
  masks = latent_mask(model, image_mask)
  eps, _, _ = _encode(model, variables, y, False)
  new = resample_eps(eps, masks, rng, temperature)
  y_new = _jitted(model, "decode")(variables, new)
  return y_new, new, list(eps)


def resample_latents(model, variables, x_uint8, image_mask, rng: jax.Array,
                     temperature: float = 1.0) -> np.ndarray:
  """uint8 images ``N x H x W x C``: ``x_uint8`` (at the bin centres) with the latents of
  ``image_mask`` redrawn from the prior at ``temperature`` and the flow inverted
  (App. M.1)."""
  y_new, _, _ = resample_unit(model, variables, dequantize(x_uint8), image_mask, rng, temperature)
  return np.asarray(quantize(y_new))
