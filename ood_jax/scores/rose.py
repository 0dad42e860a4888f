"""``rose``: the per-sample-gradient Fisher score of Choi et al. (ROSE), DIAG or EKFAC; see
:class:`Rose`.

Per-sample gradients: ``per_sample_grads.py``; the Fisher blocks: ``fisher.py``. The EKFAC
fit makes two passes over its images (factors, then ``Λ`` in their eigenbases), DIAG one;
both then score the normalisation images once. Compiled functions are cached per
(model, layers).
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ood_jax.data import batches
from ood_jax.data.pixels import validate_images
from ood_jax.errors import InvalidInputError
from ood_jax.models.registry import spec_of
from ood_jax.scores import fisher
from ood_jax.scores import per_sample_grads as psg
from ood_jax.scores.base import Scorer, ScorerState, _device_multiple

FISHERS = ("diag", "ekfac")
AGGREGATIONS = ("relu_sum", "max")
Z_MODES = ("mean", "sample")


def default_layers(model: nn.Module) -> tuple[str, ...]:
  """The layers ROSE uses for ``model``: its spec's ``rose_layers`` (VAE encoder
  convolutions, Glow's 1x1 convolutions)."""
  spec = spec_of(model)
  if spec is None or spec.rose_layers is None:
    raise InvalidInputError(f"rose: no default layers for {type(model).__name__}; pass layers= "
                            "(fnmatch patterns over parameter paths, or 'all').")
  return tuple(spec.rose_layers)


def aggregate(z: jax.Array, how: str) -> jax.Array:
  """Layer z-scores ``N x L`` -> ``N``: ``Σ_l ReLU(z_l)`` (``relu_sum``) or ``max_l z_l``."""
  if how == "relu_sum":
    return jnp.sum(jax.nn.relu(z), axis=-1)
  if how == "max":
    return jnp.max(z, axis=-1)
  raise InvalidInputError(f"rose: aggregation must be one of {AGGREGATIONS}, got {how!r}.")


def split_id(n: int, n_fisher: int, n_norm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Sorted, disjoint indices ``(fisher, norm)`` into ``n`` ID images, by a permutation
  seeded with ``seed``: ``n_fisher`` Fisher images and ``n_norm`` normalisation images when
  ``n >= n_fisher + n_norm``; with fewer, ``n_norm`` shrinks to at most half of the images
  and the Fisher gets at most the rest. Different seeds give different subsets."""
  if n < 2:
    raise InvalidInputError(f"rose: needs at least 2 in-distribution images, got {n}.")
  if n_fisher < 1 or n_norm < 1:
    raise InvalidInputError(f"rose: n_fisher and n_norm must be >= 1, got {n_fisher}, {n_norm}.")
  if n < n_fisher + n_norm:
    n_norm = max(1, min(n_norm, n // 2))
    n_fisher = max(1, min(n_fisher, n - n_norm))
  perm = np.random.default_rng([seed, 5]).permutation(n)
  return np.sort(perm[:n_fisher]), np.sort(perm[n_fisher:n_fisher + n_norm])


def _block_keys(layer: psg.Layer, sub: dict) -> list[str]:
  if layer.fast:
    return [layer.path]
  leaves = jax.tree_util.tree_flatten_with_path(sub)[0]
  return [f"{layer.path}:{jax.tree_util.keystr(k)}" for k, _ in leaves]


def make_blocks_fn(objective: psg.Objective, layers: tuple[psg.Layer, ...], z_mean: bool = False):
  """``(variables, x, rng, mask) -> {block key: block}`` (see ``fisher.py``); the noise is
  drawn from ``rng``; ``mask`` (``N``, 0/1) zeroes the gradients of padding rows.

  ``z_mean``: per-image noise (the latent models' reparameterisation ``eps``, ``z = mu +
  sigma * eps``) is replaced by zeros, i.e. the objective is taken at ``z = mu`` (the public
  ROSE code's ``num_samples = 1`` path decodes ``mu``). Whole-batch noise (a flow's
  dequantisation key) is left as drawn."""
  def fn(variables, x, rng, mask):
    noise = objective.noise(rng, x.shape[0])
    if z_mean and objective.per_image:
      noise = jax.tree.map(jnp.zeros_like, noise)
    m = mask[:, None, None]
    out = {}
    pd = psg.patches_and_deltas(objective, list(layers), variables, x, noise)
    generic = [l.path for l in layers if not l.fast]
    gg = psg.generic_grads(objective, generic, variables, x, noise) if generic else {}
    for layer in layers:
      if layer.fast:
        p, d = pd[layer.path]
        out[layer.path] = (p * m, d * m)
      else:
        g = gg[layer.path]
        for key, leaf in zip(_block_keys(layer, g), jax.tree.leaves(g)):
          out[key] = (psg.leaf_matrix(leaf) * m,)
    return out
  return fn


# Compiled functions are cached per (model, layers): refitting the same model (ablations,
# benchmarks) compiles nothing new for an already seen chunk shape.
@functools.lru_cache(maxsize=16)
def _blocks(model: nn.Module, layers: tuple[psg.Layer, ...], z_mean: bool):
  return make_blocks_fn(psg.objective_for(model), layers, z_mean)


@functools.lru_cache(maxsize=16)
def _diag_pass(model, layers, z_mean):
  """``(v, x, mask, rng) -> {block: Σ_n G_n²}``."""
  blocks = _blocks(model, layers, z_mean)
  return jax.jit(lambda v, x, m, r: {k: fisher.sum_sq(b) for k, b in blocks(v, x, r, m).items()})


@functools.lru_cache(maxsize=16)
def _factor_pass(model, layers, z_mean):
  """``(v, x, mask, rng) -> {block: (Σ a aᵀ, Σ δ δᵀ)}``."""
  blocks = _blocks(model, layers, z_mean)
  return jax.jit(lambda v, x, m, r: {k: fisher.factor_sums(b)[:2]
                                     for k, b in blocks(v, x, r, m).items()})


@functools.lru_cache(maxsize=16)
def _lambda_pass(model, layers, z_mean):
  """``({'v', 'b'}, x, mask, rng) -> {block: Σ_n (U_Aᵀ G_n U_S)²}``."""
  blocks = _blocks(model, layers, z_mean)
  return jax.jit(lambda p, x, m, r: {
      k: fisher.sum_sq(b, p["b"][k]["ua"], p["b"][k]["us"])
      for k, b in blocks(p["v"], x, r, m).items()})


def _layer_scores_fn(model, layers, z_mean=False):
  """``({'v', 'stats'}, x, rng) -> s`` (``N x L``): ``s_l = g_lᵀ F_l⁻¹ g_l`` per layer."""
  blocks = _blocks(model, layers, z_mean)
  index = {l.path: i for i, l in enumerate(layers)}

  def fn(p, x, rng):
    n = x.shape[0]
    cols = [jnp.zeros((n,), jnp.float32) for _ in layers]
    for k, b in blocks(p["v"], x, rng, jnp.ones((n,), jnp.float32)).items():
      st, i = p["stats"][k], index[k.split(":")[0]]
      cols[i] = cols[i] + fisher.quad_form(b, st["inv"], st.get("ua"), st.get("us"))
    return jnp.stack(cols, axis=-1)
  return fn


@functools.lru_cache(maxsize=16)
def _layer_scores(model, layers, z_mean):
  return jax.jit(_layer_scores_fn(model, layers, z_mean))


@functools.partial(jax.jit, static_argnums=3)
def _normalise_aggregate(s, mu, sigma, how: str):
  return aggregate((s - mu) / sigma, how)


@functools.lru_cache(maxsize=16)
def _score_fn(model, layers, how: str, z_mean: bool = False):
  """The chunk function ``({'v', 'stats', 'mu', 'sigma'}, x, rng) -> ROSE(x)`` (``N``): the
  compiled layer scores (shared with the fit's normalisation pass) then z-scores and
  aggregation."""
  raw = _layer_scores(model, layers, z_mean)

  def chunk(p, x, rng):
    s = raw({"v": p["v"], "stats": p["stats"]}, x, rng)
    return _normalise_aggregate(s, p["mu"], p["sigma"], how)
  chunk.layer_scores = raw
  return chunk


@dataclasses.dataclass(frozen=True)
class Rose(Scorer):
  """``rose``: ROSE (Choi et al.), a sum of layer-wise per-sample-gradient Fisher norms,
  z-scored; dimensionless, higher = more OOD.

  For each chosen layer l, ``g_l(x)`` is the gradient of the image's own training
  objective with respect to the layer's parameters at the trained weights, in eval mode
  (BatchNorm running statistics, so images are independent): the VAE's negative ELBO at
  ``z = mu`` (``z='mean'``, the public ROSE code: its ``num_samples = 1`` path decodes the
  posterior mean, so the score does not depend on the seed) or at one reparameterised
  ``z = mu + sigma * eps`` (``z='sample'``); the dequantised NLL for flows. The layer score is
  ``s_l(x) = g_lᵀ F_l⁻¹ g_l`` (dimensionless) with ``F_l`` the DIAG or EKFAC Fisher,
  fitted once on ``n_fisher`` ID images. Layer z-scores ``z_l = (s_l - μ_l) / σ_l`` use the
  mean and standard deviation of ``s_l`` over ``n_norm`` *other* ID images, and
  ``ROSE(x) = Σ_l ReLU(z_l)`` (``'relu_sum'``, paper Eq. 11 with unit weights and zero
  bias; the default, as the paper states its score) or ``max_l z_l`` (``'max'``, the public
  code's aggregation). Other places where paper and public code differ, and our defaults:
  the damping (``damping_kind='relative'``, ``λ = 1e-3 mean(diag F_l)``, ours: one setting
  for layers whose Fisher diagonals differ by orders of magnitude; ``'absolute'`` with
  ``damping=1e-8`` is the reference's), and the Fisher per model (``fisher=None``: the
  model spec's ``rose_fisher``, EKFAC for the VAE (App. B.2: "EKFAC ... on all the
  convolutional layers of the encoder"), DIAG for Glow's InvConv layers (App. B.2: "using
  the diagonal preconditioner")).

  ``fit`` splits ``id_data`` with :func:`split_id` (seeded by ``seed``): ``n_fisher``
  images fit the Fisher, ``n_norm`` others the z-score statistics; with fewer than
  ``n_fisher + n_norm`` images, ``n_norm`` shrinks to at most half of them and the Fisher
  gets at most the rest.

  Attributes:
    fisher: ``'ekfac'`` | ``'diag'`` | None (the model spec's ``rose_fisher``; see
      :meth:`fisher_for`).
    z: ``'mean'`` (the VAE objective at ``z = mu``) | ``'sample'`` (one ``z`` drawn per
      image from the seed).
    aggregation: ``'relu_sum'`` | ``'max'``.
    layers: ``fnmatch`` patterns over parameter-module paths (``'encoder/input_conv'``);
      None = the model's default (``default_layers``: its spec's ``rose_layers``, e.g.
      the VAE's encoder convolutions); ``'all'`` = every parameter module.
    n_fisher: ID images for the Fisher fit.
    n_norm: held-out ID images for the layer z-score statistics.
    damping: ``λ`` added to the Fisher's (eigen)diagonal: ``damping * mean(diag F_l)``
      (``damping_kind='relative'``) or ``damping`` itself (``'absolute'``).
    damping_kind: ``'relative'`` | ``'absolute'``.
    fast_path: per-sample gradients of conv/dense kernels as patch x output-gradient
      products (False: generic per-sample gradients for every layer; same values).
    name: ``'rose'``.
    seed: seeds the ID split, the VAE's reparameterisation noise (``z='sample'``) and a
      flow's dequantisation noise.
    progress: show progress bars (fit passes and scoring).
    chunk_size: images per compiled call (fit passes and scoring).
  """
  name: str = "rose"
  chunk_size: int = 128
  fisher: str | None = None
  z: str = "mean"
  aggregation: str = "relu_sum"
  layers: tuple | str | None = None
  n_fisher: int = 1000
  n_norm: int = 1000
  damping: float = 1e-3
  damping_kind: str = "relative"
  fast_path: bool = True

  def __post_init__(self):
    super().__post_init__()
    if self.fisher is not None and self.fisher not in FISHERS:
      raise InvalidInputError(f"rose: fisher must be one of {FISHERS} or None, got {self.fisher!r}.")
    if self.z not in Z_MODES:
      raise InvalidInputError(f"rose: z must be one of {Z_MODES}, got {self.z!r}.")
    if self.damping_kind not in fisher.DAMPINGS:
      raise InvalidInputError(
          f"rose: damping_kind must be one of {fisher.DAMPINGS}, got {self.damping_kind!r}.")
    if self.aggregation not in AGGREGATIONS:
      raise InvalidInputError(
          f"rose: aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}.")
    if self.n_fisher < 1 or self.n_norm < 1 or not self.damping >= 0:
      raise InvalidInputError("rose: n_fisher and n_norm must be >= 1 and damping >= 0.")

  # ------------------------------------------------------------------ setup
  def fisher_for(self, model) -> str:
    """``fisher``, or where None the model spec's ``rose_fisher`` (``'ekfac'`` without a spec)."""
    if self.fisher is not None:
      return self.fisher
    spec = spec_of(model)
    return spec.rose_fisher if spec is not None else "ekfac"

  def patterns(self, model) -> tuple:
    if self.layers is None:
      return default_layers(model)
    if self.layers == "all":
      return ("*",)
    return (self.layers,) if isinstance(self.layers, str) else tuple(self.layers)

  def chosen_layers(self, model, variables, x_example) -> list[psg.Layer]:
    """The selected layers, classified (fast path or generic) by one shape-only trace."""
    paths = psg.select_layers(variables["params"], self.patterns(model))
    objective = psg.objective_for(model)
    layers = psg.describe_layers(objective, variables, jnp.asarray(x_example[:1]), paths)
    if not self.fast_path:
      layers = [psg.Layer(l.path, "generic") for l in layers]
    return layers

  def _chunks(self, x, key, desc):
    # Fit passes always use full chunks (the last one padded, masked out of every sum), so
    # refits with other image counts (the Fisher-size ablation) compile nothing new.
    chunk = _device_multiple(self.chunk_size)
    it = batches.padded_chunks(x, chunk)
    if self.progress:
      it = tqdm(it, total=-(-len(x) // chunk), desc=desc, unit="chunk", leave=False)
    for i, (part, n) in enumerate(it):
      mask = (np.arange(len(part)) < n).astype(np.float32)
      yield batches.to_devices(part), batches.to_devices(mask), jax.random.fold_in(key, i), n

  def _sum_pass(self, fn, params, x, key, desc):
    total = None
    for part, mask, k, _ in self._chunks(x, key, desc):
      out = fn(params, part, mask, k)
      total = out if total is None else jax.tree.map(jnp.add, total, out)
    return jax.device_get(total)

  # ------------------------------------------------------------------ fit
  def fit(self, model, variables, id_data) -> ScorerState:
    hwc = tuple(model.image_shape)
    x = validate_images(id_data, what="rose in-distribution data", hwc=hwc)
    idx_f, idx_n = split_id(len(x), self.n_fisher, self.n_norm, self.seed)
    layers = tuple(self.chosen_layers(model, variables, x))
    z_mean = self.z == "mean"
    key = jax.random.PRNGKey(self.seed)
    fit_key = jax.random.fold_in(key, 1_000_001)   # the same noise in both EKFAC passes
    v = batches.replicate(variables)
    xf = x[idx_f]
    n_f = float(len(xf))
    stats = {}
    if self.fisher_for(model) == "diag":
      sums = self._sum_pass(_diag_pass(model, layers, z_mean), v, xf, fit_key, "rose F")
      for k, s in sums.items():
        stats[k] = {"inv": fisher.inverse_diag(jnp.asarray(s) / n_f, self.damping,
                                               self.damping_kind)}
    else:
      sums = self._sum_pass(_factor_pass(model, layers, z_mean), v, xf, fit_key, "rose A,S")
      bases, cache = {}, {}
      for k, (a, s) in sums.items():
        # Layers fed the same input (the VAE's mu / logvar heads) share A: one eigh.
        ka = (np.asarray(a).tobytes(), a.shape)
        if ka not in cache:
          cache[ka] = fisher.eigenbasis(jnp.asarray(a))
        bases[k] = {"ua": cache[ka], "us": fisher.eigenbasis(jnp.asarray(s))}
      bases = batches.replicate(bases)
      lam = self._sum_pass(_lambda_pass(model, layers, z_mean), {"v": v, "b": bases}, xf,
                           fit_key, "rose Λ")
      for k, s in lam.items():
        stats[k] = {**bases[k], "inv": fisher.inverse_diag(jnp.asarray(s) / n_f, self.damping,
                                                           self.damping_kind)}

    params = batches.replicate({"v": variables, "stats": stats})
    raw = _layer_scores(model, layers, z_mean)
    s_norm = []
    for part, _, k, n in self._chunks(x[idx_n], jax.random.fold_in(key, 1_000_002), "rose μ,σ"):
      s_norm.append(np.asarray(jax.device_get(raw(params, part, k)))[:n])
    s_norm = np.concatenate(s_norm).astype(np.float64)
    mu = s_norm.mean(axis=0)
    sd = s_norm.std(axis=0, ddof=1) if len(s_norm) > 1 else np.zeros_like(mu)
    sd = np.where(sd > 0, sd, 1.0)
    params = {**params, "mu": batches.replicate(jnp.asarray(mu, jnp.float32)),
              "sigma": batches.replicate(jnp.asarray(sd, jnp.float32))}
    return ScorerState(params=params, chunk_fn=_score_fn(model, layers, self.aggregation, z_mean),
                       image_shape=hwc, name=self.name)
