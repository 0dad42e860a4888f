"""Per-sample gradients of a model's training objective, restricted to chosen layers.

A *layer* is a module that holds parameters, named by its parameter path joined with
``/`` (``'encoder/input_conv'``); :func:`select_layers` picks them with ``fnmatch``
patterns. Two ways to get each image's gradient ``G_n`` of its own loss:

* **fast path** (plain ``nn.Conv`` / ``nn.Dense`` called once per forward): one batched
  forward and backward of the *summed* loss, differentiated with respect to a zero
  perturbation added to each chosen layer's output (``nn.intercept_methods``), which also
  records the layer's input. In eval mode (BatchNorm with running statistics) images do
  not interact, so the output cotangent ``Δ`` of the summed loss holds each image's own
  ``dL_n/dy``. With ``P`` the image's input patches (``T`` positions x ``k`` entries, a
  constant-1 entry appended when the layer has a bias), ``G_n = P_nᵀ Δ_n`` (``k x out``).
  No parameter gradient is computed anywhere (the decoder gets input cotangents only).
* **generic fallback** (anything else, e.g. a Glow invertible 1x1 convolution): ``vmap``
  over images of ``jax.grad`` of the one-image loss with respect to the layer's subtree.

The objective is the model's per-image training loss in eval mode (nats): for the VAE the
negative ELBO with one reparameterised ``z = mu + sigma * eps`` per image (analytic KL, the
math of ``ConvVAE.__call__``), ``eps ~ N(0, I)`` drawn from the chunk's key (the ``'sample'``
noise, drawn outside the model so every path and the tests use the same ``eps``); for other
models ``model.apply(v, x, train=False, rngs=...)`` with the ``'sample'`` and ``'dequant'``
streams (flows: the dequantised NLL).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.linear import canonicalize_padding
from jax import lax

from ood_jax.errors import InvalidInputError
from ood_jax.models.registry import spec_of
from ood_jax.models.spec import Objective, default_objective

Noise = Any


# ----------------------------------------------------------------------------- objectives
def objective_for(model: nn.Module) -> Objective:
  """The training objective of ``model`` from its registered spec (the VAE: explicit
  ``eps``); ``default_objective`` (``__call__``) for an unregistered module."""
  spec = spec_of(model)
  return spec.objective(model) if spec is not None else default_objective(model)


# ----------------------------------------------------------------------------- layers
@dataclasses.dataclass(frozen=True)
class Layer:
  """A chosen layer. ``kind``: ``'conv'`` / ``'dense'`` (fast path) or ``'generic'``.

  Fast-path layers have ``G`` of shape ``(k, out)``: ``k = kh*kw*C_in (+1 with a bias)``
  rows in the order of ``kernel.reshape(-1, out)`` then the bias row.
  """
  path: str
  kind: str
  kernel_shape: tuple = ()
  use_bias: bool = False
  strides: tuple = ()
  padding: tuple = ()          # ((lo, hi), (lo, hi)) for convs

  @property
  def fast(self) -> bool:
    return self.kind != "generic"


def _param_modules(params, prefix=()) -> list[tuple[str, ...]]:
  """Paths of the dicts in ``params`` that hold arrays directly (the parameter modules)."""
  out = []
  if any(not isinstance(v, dict) for v in params.values()):
    out.append(prefix)
  for k, v in params.items():
    if isinstance(v, dict):
      out += _param_modules(v, prefix + (k,))
  return out


def select_layers(params: dict, patterns) -> list[str]:
  """Parameter-module paths (``'a/b'``) matching any ``fnmatch`` pattern, in tree order."""
  patterns = (patterns,) if isinstance(patterns, str) else tuple(patterns)
  paths = ["/".join(p) for p in _param_modules(params) if p]
  chosen = [p for p in paths if any(fnmatch.fnmatchcase(p, pat) for pat in patterns)]
  if not chosen:
    raise InvalidInputError(f"layers {list(patterns)} match no parameter module; the model has: "
                            f"{', '.join(paths)}.")
  return chosen


def subtree(params: dict, path: str) -> dict:
  node = params
  for k in path.split("/"):
    node = node[k]
  return node


def _conv_layer(path: str, m: nn.Conv, x_shape) -> Layer:
  nd = len(x_shape) - 2
  ks = tuple(m.kernel_size) if not isinstance(m.kernel_size, int) else (m.kernel_size,) * nd
  def norm(v):
    return (1,) * nd if v is None else ((v,) * nd if isinstance(v, int) else tuple(v))
  if (nd != 2 or m.feature_group_count != 1 or norm(m.input_dilation) != (1, 1)
      or norm(m.kernel_dilation) != (1, 1) or m.padding == "CIRCULAR"
      or m.padding == "CAUSAL" or m.mask is not None):
    return Layer(path, "generic")
  strides = norm(m.strides)
  pad = canonicalize_padding(m.padding, nd)
  if isinstance(pad, str):
    pad = tuple(lax.padtype_to_pads(x_shape[1:3], ks, strides, pad))
  return Layer(path, "conv", ks + (x_shape[-1], m.features), bool(m.use_bias), strides,
               tuple(tuple(p) for p in pad))


def describe_layers(objective: Objective, variables, x, paths: list[str]) -> list[Layer]:
  """Traces the objective once (shapes only) and classifies each chosen layer."""
  seen: dict[str, list] = {p: [] for p in paths}

  def icpt(next_fun, args, kwargs, ctx):
    p = "/".join(ctx.module.path)
    if ctx.method_name == "__call__" and p in seen:
      seen[p].append((ctx.module, jnp.shape(args[0])))
    return next_fun(*args, **kwargs)

  def run():
    with nn.intercept_methods(icpt):
      return objective.batched(variables, x, objective.noise(jax.random.key(0), x.shape[0]))
  jax.eval_shape(run)
  layers = []
  for p in paths:
    calls = seen[p]
    m = calls[0][0] if len(calls) == 1 else None
    if isinstance(m, nn.Conv) and len(calls[0][1]) == 4:
      layers.append(_conv_layer(p, m, calls[0][1]))
    elif isinstance(m, nn.Dense):
      layers.append(Layer(p, "dense", (calls[0][1][-1], m.features), bool(m.use_bias)))
    else:
      layers.append(Layer(p, "generic"))
  return layers


# ----------------------------------------------------------------------------- fast path
def extract_patches(x: jax.Array, layer: Layer) -> jax.Array:
  """Input patches ``N x T x k`` of a conv (im2col by slicing, no multiply-adds) or dense
  layer; entries ordered as ``kernel.reshape(-1, out)``, a constant 1 appended with a bias."""
  n = x.shape[0]
  if layer.kind == "conv":
    kh, kw = layer.kernel_shape[:2]
    sh, sw = layer.strides
    x = jnp.pad(x, ((0, 0), *layer.padding, (0, 0)))
    oh = (x.shape[1] - kh) // sh + 1
    ow = (x.shape[2] - kw) // sw + 1
    taps = [x[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
            for i in range(kh) for j in range(kw)]
    p = jnp.stack(taps, axis=3).reshape(n, oh * ow, kh * kw * x.shape[-1])
  else:
    p = x.reshape(n, -1, x.shape[-1])
  if layer.use_bias:
    p = jnp.concatenate([p, jnp.ones(p.shape[:2] + (1,), p.dtype)], axis=-1)
  return p


def patches_and_deltas(objective: Objective, layers: list[Layer], variables, x: jax.Array,
                       noise: Noise) -> dict[str, tuple[jax.Array, jax.Array]]:
  """``{path: (P, Δ)}`` for the fast-path layers: patches ``N x T x k`` and output
  cotangents ``N x T x out`` of the summed loss (each image's own, eval mode)."""
  fast = {l.path: l for l in layers if l.fast}
  if not fast:
    return {}

  def run(perturb, record):
    def icpt(next_fun, args, kwargs, ctx):
      p = "/".join(ctx.module.path)
      if ctx.method_name != "__call__" or p not in fast:
        return next_fun(*args, **kwargs)
      record[p] = args[0]
      y = next_fun(*args, **kwargs)
      return y if perturb is None else y + perturb[p]
    with nn.intercept_methods(icpt):
      return objective.batched(variables, x, noise)

  def outputs():
    shapes = {}
    def icpt_shapes(next_fun, args, kwargs, ctx):
      y = next_fun(*args, **kwargs)
      p = "/".join(ctx.module.path)
      if ctx.method_name == "__call__" and p in fast:
        shapes[p] = y
      return y
    with nn.intercept_methods(icpt_shapes):
      objective.batched(variables, x, noise)
    return shapes
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(outputs))

  def summed(perturb):
    record = {}
    loss = run(perturb, record)
    return jnp.sum(loss), record
  _, vjp, inputs = jax.vjp(summed, zeros, has_aux=True)
  deltas = vjp(jnp.ones((), jnp.float32))[0]
  n = x.shape[0]
  return {p: (extract_patches(inputs[p], l), deltas[p].reshape(n, -1, deltas[p].shape[-1]))
          for p, l in fast.items()}


def grads_from_patches(p: jax.Array, d: jax.Array) -> jax.Array:
  """Per-image gradient matrices ``G_n = P_nᵀ Δ_n``, ``N x k x out``."""
  return jnp.einsum("ntk,nto->nko", p, d)


def grad_matrix_to_params(g: jax.Array, layer: Layer) -> dict:
  """``N x k x out`` gradient matrices -> ``{'kernel': N x kernel_shape, 'bias': N x out}``."""
  n = g.shape[0]
  if layer.use_bias:
    return {"kernel": g[:, :-1].reshape((n,) + layer.kernel_shape), "bias": g[:, -1]}
  return {"kernel": g.reshape((n,) + layer.kernel_shape)}


# ----------------------------------------------------------------------------- generic path
def leaf_matrix(leaf: jax.Array) -> jax.Array:
  """A per-image gradient leaf ``N x shape`` as ``N x rows x cols`` (last axis = columns;
  a vector becomes one row)."""
  n = leaf.shape[0]
  if leaf.ndim == 1:
    return leaf.reshape(n, 1, 1)
  return leaf.reshape(n, -1, leaf.shape[-1])


def generic_grads(objective: Objective, paths: list[str], variables, x: jax.Array,
                  noise: Noise) -> dict[str, dict]:
  """Per-image gradients of the subtrees at ``paths`` (one ``vmap`` of ``jax.grad`` of the
  one-image loss over all of them): ``{path: subtree with a leading axis N}``.

  Noise: per-image rows where the objective has them (the VAE), else a per-image key
  ``fold_in(key, n)``.
  """
  params = variables["params"]

  def put(tree, sub, ks):
    if not ks:
      return sub
    return {**tree, ks[0]: put(tree[ks[0]], sub, ks[1:])}

  def one(subs, xi, ni):
    p = params
    for path, sub in subs.items():
      p = put(p, sub, path.split("/"))
    return objective.batched({**variables, "params": p}, xi[None], ni)[0]
  subs = {path: subtree(params, path) for path in paths}
  n = x.shape[0]
  if objective.per_image:
    rows = jax.tree.map(lambda a: a[:, None], noise)
  else:
    rows = jax.vmap(lambda i: jax.random.fold_in(noise, i))(jnp.arange(n))
  return jax.vmap(jax.grad(one), in_axes=(None, 0, 0))(subs, x, rows)
