"""``latent_svm``: a linear SVM separating ID from OOD latent codes (Chen's thesis, §3.3.7).

Chen (Chapter 3, §3.3.7, Table 3.1, Figs 3.9-3.11) encodes ID and OOD images with a VAE's
encoder and fits a linear SVM ``y = w^T z + b`` to the codes, ID positive. This module
holds the pure pieces of that analysis and a Scorer built on them:

* :func:`fit_linear_svm` -> ``(w, b)`` in the raw code space; :func:`decision` ``d = w.z + b``
  (the thesis' "weighted (signed) distance", Fig. 3.9); :func:`geometric_distance`
  ``d / |w|``; :func:`accuracies` (Table 3.1's Pos. Acc. / Neg. Acc.);
  :func:`split_codes` and :func:`separability` (our held-out protocol, below);
* :func:`boundary_grid` (Fig. 3.10's walk along the normal), :func:`hardest` (Fig. 3.11's
  codes nearest the boundary), :func:`random_projection` (the thesis' baseline: the same
  SVM on seeded random projections of the raw pixels);
* :func:`encode_means` (eval-mode posterior means of a model with ``encode``) and the
  SUPERVISED Scorer :class:`LatentSVM`.

Conventions. Codes ``z`` are float arrays ``N x D``. ID is the positive class: ``d > 0``
predicts ID, ``d < 0`` OOD, ``d == 0`` (on the boundary) counts as wrong for both classes.
``w``, ``b`` always act on RAW codes: when the SVM is fitted on standardised codes the
standardisation is folded back into them, so the hyperplane, its unit normal
``w_hat = w / |w|`` and every distance live in the space the decoder reads.

Protocol (the thesis states none). Table 3.1: the ID codes and the OOD codes are each split
at random into a training and a held-out half (:func:`split_codes`, ``test_fraction``
0.5; ID with stream 0, OOD with stream 1 of ``seed``); the SVM is fitted on the two
training halves and its accuracies are reported on the held-out halves. The SVM: per-feature
standardisation (mean / std of the training codes, folded back), class weights balanced
(``n / (2 n_class)``, so unequal ID / OOD counts do not bias Pos./Neg. Acc.), ``C = 1``,
scikit-learn ``LinearSVC`` (liblinear, squared hinge, seeded; ``solver='svc'`` gives
libsvm's ``SVC(kernel='linear')``, the plain hinge loss with an unpenalised bias, which is
slower: ~5 s for 2 x 2000 overlapping 100-d codes against ~0.02 s).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ood_jax.data import batches
from ood_jax.data.pixels import validate_images
from ood_jax.errors import InvalidInputError
from ood_jax.scores.base import Scorer, ScorerState, _device_multiple

SOLVERS = ("liblinear", "svc")


# ---------------------------------------------------------------------------- validation
def _codes(z, what: str, dim: int | None = None) -> np.ndarray:
  """``z`` as float64 ``N x D`` (N >= 1), finite, with ``D == dim`` when given."""
  a = np.asarray(z)
  if a.dtype == object or not (np.issubdtype(a.dtype, np.floating)
                               or np.issubdtype(a.dtype, np.integer)):
    raise InvalidInputError(f"{what}: expected real-valued codes N x D, got dtype {a.dtype}.")
  if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
    raise InvalidInputError(f"{what}: expected a non-empty 2-D array N x D of codes, got shape "
                            f"{a.shape}.")
  if dim is not None and a.shape[1] != dim:
    raise InvalidInputError(f"{what}: codes have dimension {a.shape[1]}, the hyperplane {dim}.")
  a = a.astype(np.float64)
  if not np.all(np.isfinite(a)):
    raise InvalidInputError(f"{what}: {int(np.sum(~np.isfinite(a)))} NaN/inf values.")
  return a


def _plane(w, b) -> tuple[np.ndarray, float]:
  w = np.asarray(w, np.float64)
  if w.ndim != 1 or w.size == 0 or not np.all(np.isfinite(w)):
    raise InvalidInputError(f"hyperplane: w must be a finite 1-D vector, got shape {w.shape}.")
  b = float(np.asarray(b, np.float64).reshape(()))
  if not np.isfinite(b):
    raise InvalidInputError(f"hyperplane: b must be finite, got {b}.")
  return w, b


def _norm(w: np.ndarray) -> float:
  n = float(np.linalg.norm(w))
  if n == 0.0:
    raise InvalidInputError("hyperplane: w is the zero vector (the SVM found no direction); "
                            "geometric distances and the normal are undefined.")
  return n


# ---------------------------------------------------------------------------- the SVM
def fit_linear_svm(pos, neg, C: float = 1.0, seed: int = 0, *, standardize: bool = True,
                   balanced: bool = True, solver: str = "liblinear",
                   max_iter: int = 20000) -> tuple[np.ndarray, float]:
  """A linear SVM separating ``pos`` (ID, label +1) from ``neg`` (OOD, label -1).

  Args:
    pos, neg: codes ``N_pos x D`` and ``N_neg x D``.
    C: the SVM's inverse regularisation strength.
    seed: liblinear's ``random_state`` (its coordinate-descent order); libsvm ignores it.
    standardize: fit on per-feature standardised codes (mean and std of the pooled training
      codes; a constant feature gets std 1) and fold that back:
      ``w = w_s / std``, ``b = b_s - sum(w_s * mean / std)``, so ``w.z + b`` on RAW codes
      equals the standardised SVM's decision value.
    balanced: class weights ``n / (2 n_class)`` (scikit-learn's ``'balanced'``).
    solver: ``'liblinear'`` (``LinearSVC``, squared hinge; its bias is penalised like a
      weight, which standardisation makes nearly harmless) or ``'svc'``
      (``SVC(kernel='linear')``, hinge loss, unpenalised bias; O(N^2) time, and very slow
      on unstandardised codes of unequal scales: over a minute for 300 codes).
    max_iter: solver iteration cap (liblinear); libsvm runs to convergence.

  Returns:
    ``(w, b)``: float64 ``[D]`` and a float, acting on raw codes: ``d = w.z + b > 0`` = ID.
  """
  from sklearn.svm import SVC, LinearSVC  # pylint: disable=import-outside-toplevel
  pos = _codes(pos, "fit_linear_svm pos (ID) codes")
  neg = _codes(neg, "fit_linear_svm neg (OOD) codes", pos.shape[1])
  if solver not in SOLVERS:
    raise InvalidInputError(f"fit_linear_svm: solver must be one of {SOLVERS}, got {solver!r}.")
  if not C > 0:
    raise InvalidInputError(f"fit_linear_svm: C must be > 0, got {C!r}.")
  x = np.concatenate([pos, neg])
  y = np.concatenate([np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)])
  if standardize:
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 0, std, 1.0)
  else:
    mean, std = np.zeros(x.shape[1]), np.ones(x.shape[1])
  xs = (x - mean) / std
  weight = "balanced" if balanced else None
  if solver == "liblinear":
    clf = LinearSVC(C=float(C), class_weight=weight, random_state=int(seed),
                    max_iter=int(max_iter), dual="auto")
  else:
    clf = SVC(kernel="linear", C=float(C), class_weight=weight)
  clf.fit(xs, y)
  # classes_ is [0, 1]: decision_function > 0 predicts label 1, the ID class.
  ws = np.asarray(clf.coef_, np.float64).reshape(-1)
  bs = float(np.asarray(clf.intercept_).reshape(()))
  return ws / std, bs - float(np.sum(ws * mean / std))


def decision(z, w, b) -> np.ndarray:
  """``d = w.z + b`` per code, float64 ``[N]``: the thesis' "weighted (signed) distance"
  (Fig. 3.9); > 0 predicts ID."""
  w, b = _plane(w, b)
  return _codes(z, "decision codes", w.size) @ w + b


def geometric_distance(z, w, b) -> np.ndarray:
  """Signed Euclidean distance to the hyperplane, ``(w.z + b) / |w|``, float64 ``[N]``
  (positive on the ID side), in the units of the raw codes."""
  w, b = _plane(w, b)
  return decision(z, w, b) / _norm(w)


def accuracies(w, b, pos_test, neg_test) -> tuple[float, float]:
  """``(pos_acc, neg_acc)``: the fraction of ``pos_test`` (ID) codes with ``d > 0`` and of
  ``neg_test`` (OOD) codes with ``d < 0`` (Table 3.1's Pos. Acc. / Neg. Acc.; a code on the
  boundary counts as wrong)."""
  return (float(np.mean(decision(pos_test, w, b) > 0)),
          float(np.mean(decision(neg_test, w, b) < 0)))


def split_codes(n: int, seed: int, test_fraction: float = 0.5,
                stream: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """``(train_idx, test_idx)``: a seeded random split of ``range(n)``, each sorted.

  ``np.random.default_rng([seed, stream]).permutation(n)``: its first
  ``n_test = round(n * test_fraction)`` (clipped to 1 .. n - 1) entries are the held-out
  set, the rest the training set. :func:`separability` uses stream 0 for the ID codes and
  stream 1 for the OOD codes.
  """
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
    raise InvalidInputError(f"split_codes: need n >= 2 codes to hold some out, got {n!r}.")
  if not 0.0 < test_fraction < 1.0:
    raise InvalidInputError(f"split_codes: test_fraction must be in (0, 1), got {test_fraction!r}.")
  n_test = int(min(max(round(n * test_fraction), 1), n - 1))
  perm = np.random.default_rng([int(seed), int(stream)]).permutation(int(n))
  return np.sort(perm[n_test:]), np.sort(perm[:n_test])


@dataclasses.dataclass(frozen=True)
class Separability:
  """What :func:`separability` returns (Table 3.1's row and the pieces of Figs 3.9-3.11).

  Attributes:
    w, b: the hyperplane on raw codes (``d = w.z + b > 0`` = ID).
    pos_acc, neg_acc: held-out ID / OOD accuracy (Table 3.1).
    train_pos_acc, train_neg_acc: the same on the training halves.
    pos_train, pos_test, neg_train, neg_test: row indices into ``pos`` / ``neg``.
  """
  w: np.ndarray
  b: float
  pos_acc: float
  neg_acc: float
  train_pos_acc: float
  train_neg_acc: float
  pos_train: np.ndarray
  pos_test: np.ndarray
  neg_train: np.ndarray
  neg_test: np.ndarray


def separability(pos, neg, *, C: float = 1.0, seed: int = 0, test_fraction: float = 0.5,
                 **svm_kwargs) -> Separability:
  """Our Table 3.1 protocol: split ``pos`` (ID) and ``neg`` (OOD) codes with
  :func:`split_codes` (streams 0 and 1 of ``seed``), fit :func:`fit_linear_svm` on the
  training parts (``svm_kwargs``: ``standardize``, ``balanced``, ``solver``, ``max_iter``),
  report :func:`accuracies` on the held-out parts."""
  pos = _codes(pos, "separability pos (ID) codes")
  neg = _codes(neg, "separability neg (OOD) codes", pos.shape[1])
  p_tr, p_te = split_codes(len(pos), seed, test_fraction, stream=0)
  n_tr, n_te = split_codes(len(neg), seed, test_fraction, stream=1)
  w, b = fit_linear_svm(pos[p_tr], neg[n_tr], C=C, seed=seed, **svm_kwargs)
  pa, na = accuracies(w, b, pos[p_te], neg[n_te])
  tpa, tna = accuracies(w, b, pos[p_tr], neg[n_tr])
  return Separability(w=w, b=b, pos_acc=pa, neg_acc=na, train_pos_acc=tpa, train_neg_acc=tna,
                      pos_train=p_tr, pos_test=p_te, neg_train=n_tr, neg_test=n_te)


# ---------------------------------------------------------------------------- figures
def boundary_grid(z, w, b, num_steps: int, step: float = 2.0) -> np.ndarray:
  """Latents along the normal through each code (Fig. 3.10), float64 ``N x num_steps x D``.

  With ``w_hat = w / |w|``, ``g = (w.z + b) / |w|`` (the code's geometric distance) and
  ``p = z - g w_hat`` (its projection on the boundary), column ``i`` (``j = i - m``,
  ``m = (num_steps - 1) / 2``, ``num_steps`` odd) is

      ``p + j * step * |g| * w_hat``,  geometric distance ``j * step * |g|``,

  ordered from the OOD (negative) side to the ID (positive) side as in Fig. 3.10. The
  centre column (``j = 0``) lies on the boundary (decision value 0) and consecutive columns
  differ by ``step * |g|`` in geometric distance.

  ``step = 2`` is the issue's reading of the caption ("the step is of length 2|d|, the
  center column is on the boundary"): columns at ``0, +-2|g|, +-4|g|, ...``; the code
  itself is then NOT a column: it sits half-way between the centre and a neighbour
  (``j = +1/2`` if it is on the ID side, ``-1/2`` on the OOD side), and its mirror image
  ``z - 2 g w_hat`` at the other ``j = -+1/2``. ``step = 1 / m`` is the other reading (the
  whole walk is ``2|d|`` long): the end columns are the code and its mirror image. A code
  on the boundary (``g = 0``) gives ``num_steps`` copies of itself.
  """
  w, b = _plane(w, b)
  z = _codes(z, "boundary_grid codes", w.size)
  if (isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer))
      or num_steps < 1 or num_steps % 2 == 0):
    raise InvalidInputError(f"boundary_grid: num_steps must be an odd integer >= 1 (so that a "
                            f"centre column lies on the boundary), got {num_steps!r}.")
  if not (np.isfinite(step) and step > 0):
    raise InvalidInputError(f"boundary_grid: step must be a finite number > 0, got {step!r}.")
  norm = _norm(w)
  w_hat = w / norm
  g = (z @ w + b) / norm                                   # N
  p = z - g[:, None] * w_hat                               # N x D, on the boundary
  m = (num_steps - 1) // 2
  t = np.arange(-m, m + 1, dtype=np.float64) * float(step)  # K, in units of |g|
  return p[:, None, :] + (t[None, :, None] * np.abs(g)[:, None, None]) * w_hat


def hardest(z, w, b, k: int) -> np.ndarray:
  """Indices (int64 ``[k]``) of the ``k`` codes nearest the boundary (smallest ``|w.z + b|``),
  nearest first, ties in index order (Fig. 3.11 a)."""
  d = np.abs(decision(z, w, b))
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(d):
    raise InvalidInputError(f"hardest: k must be an integer in 1..{len(d)} (the number of "
                            f"codes), got {k!r}.")
  return np.argsort(d, kind="stable")[:int(k)].astype(np.int64)


def random_projection(x_uint8, dim: int, seed: int = 0, chunk: int = 4096) -> np.ndarray:
  """The thesis' pixel baseline: ``(x / 255).reshape(N, D_px) @ G / sqrt(D_px)``, float32
  ``N x dim``, with ``G`` a ``D_px x dim`` standard normal matrix drawn from
  ``np.random.default_rng(seed).standard_normal`` (float64; computed in float64, rows in
  ``chunk``s, then rounded to float32). Project the ID and OOD images with the same
  ``seed`` (and image shape), and pass ``dim`` = the latent dimension."""
  x = validate_images(x_uint8, what="random_projection images")
  if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
    raise InvalidInputError(f"random_projection: dim must be a positive integer, got {dim!r}.")
  d_px = int(np.prod(x.shape[1:]))
  g = np.random.default_rng(seed).standard_normal((d_px, int(dim))) / np.sqrt(d_px)
  flat = x.reshape(len(x), d_px)
  out = [(flat[i:i + chunk] / 255.0) @ g for i in range(0, len(x), chunk)]
  return np.concatenate(out).astype(np.float32)


# ---------------------------------------------------------------------------- encoding
def _check_encoder(model, what: str) -> None:
  if not callable(getattr(model, "encode", None)):
    raise InvalidInputError(
        f"{what}: model {type(model).__name__} has no 'encode' method; the latent SVM needs "
        "an encoder of images to codes (e.g. the 'vae' ConvVAE or the 'ae' autoencoder).")


def _mean_fn(model):
  """Pure ``(variables, x_uint8) -> mu`` float32 ``N x D`` in eval mode: the first output
  of ``encode`` when it returns a tuple (a VAE's ``(mu, logvar)``), else the output."""
  def fn(variables, x):
    out = model.apply(variables, x, train=False, method="encode")
    mu = out[0] if isinstance(out, (tuple, list)) else out
    return jnp.asarray(mu, jnp.float32).reshape(x.shape[0], -1)
  return fn


def encode_means(model, variables, x_uint8, batch_size: int = 256) -> np.ndarray:
  """Eval-mode (BatchNorm running statistics) codes of ``x_uint8``, float32 ``N x D``: the
  posterior mean ``mu`` of a VAE (``encode``'s first output), an autoencoder's code. Runs
  in padded chunks of ``batch_size`` (rounded up to a multiple of the devices)."""
  _check_encoder(model, "encode_means")
  hwc = tuple(model.image_shape) if hasattr(model, "image_shape") else None
  x = validate_images(x_uint8, what="encode_means images", hwc=hwc)
  bs = batch_size
  if isinstance(bs, bool) or not isinstance(bs, (int, np.integer)) or bs < 1:
    raise InvalidInputError(f"encode_means: batch_size must be a positive integer, got {bs!r}.")
  fn = jax.jit(_mean_fn(model))
  params = batches.replicate(variables)
  chunk = _device_multiple(min(int(batch_size), len(x)))
  out = [np.asarray(jax.device_get(fn(params, batches.to_devices(part))))[:n]
         for part, n in batches.padded_chunks(x, chunk)]
  return np.concatenate(out).astype(np.float32)


# ---------------------------------------------------------------------------- the Scorer
@dataclasses.dataclass(frozen=True)
class LatentSVM(Scorer):
  """``latent_svm``: ``-(w.mu(x) + b)`` for a linear SVM between ID and auxiliary-OOD codes
  (Chen's thesis, §3.3.7); higher = more OOD. Units: the SVM's decision value (unitless).

  SUPERVISED: UNLIKE THE LIKELIHOOD SCORES, THIS SCORE IS FITTED ON OOD EXAMPLES (the
  ``aux`` set). It measures how separable the codes are, not unsupervised detection;
  report it apart from the unsupervised scores, and never with ``aux`` = the OOD test
  set's own images (use another split or another set).

  ``fit`` encodes the first ``n_id`` images of ``id_data`` and ``n_aux`` images of the
  dataset ``aux`` (loaded by name through ``ood_jax.data.load(aux, aux_split, n=n_aux,
  seed=seed, data_dir=data_dir)``; any ``<name>_<split>.npz`` in a data dir loads by
  name) with the model's ``encode`` (eval-mode BatchNorm, ``mu`` only), then fits
  :func:`fit_linear_svm` (ID positive) on all of them; ``score`` is ``-(w.mu(x) + b)``
  (``state.params['w']``, ``['b']`` hold the hyperplane on raw codes). For held-out
  accuracies (Table 3.1) use :func:`separability` on :func:`encode_means` codes.

  Attributes:
    aux: name (spec) of the auxiliary OOD dataset, e.g. ``'svhn'``; required.
    aux_split: its split.
    n_aux: auxiliary images (a seeded subset when the set is larger); None = all.
    n_id: ID training images (the first ``n_id`` of ``id_data``); None = all.
    C: the SVM's inverse regularisation strength.
    solver: ``'liblinear'`` or ``'svc'`` (see :func:`fit_linear_svm`).
    standardize: standardise the codes for the fit (folded back into ``w``, ``b``).
    batch_size: images per encoder call during ``fit``.
    data_dir: first directory searched for ``<aux>_<aux_split>.npz``.
    name: ``'latent_svm'``.
    seed: the aux subset and liblinear's order.
    progress: show a progress bar while scoring.
    chunk_size: images per compiled call while scoring, at most.
  """
  name: str = "latent_svm"
  aux: str = ""
  aux_split: str = "train"
  n_aux: int | None = 2000
  n_id: int | None = 2000
  C: float = 1.0
  solver: str = "liblinear"
  standardize: bool = True
  batch_size: int = 256
  data_dir: str | None = None

  def __post_init__(self):
    super().__post_init__()
    # Settings are checked when the scorer is built (before any training in an experiment);
    # ``aux`` only in ``fit``, so that the default-constructed scorer exists for listings.
    if self.solver not in SOLVERS:
      raise InvalidInputError(f"{self.name}: solver must be one of {SOLVERS}, got {self.solver!r}.")
    for field in ("n_id", "n_aux"):
      v = getattr(self, field)
      if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
        raise InvalidInputError(f"{self.name}: {field} must be a positive integer or None, "
                                f"got {v!r}.")
    if int(self.batch_size) < 1:
      raise InvalidInputError(f"{self.name}: batch_size must be >= 1, got {self.batch_size!r}.")

  def fit(self, model, variables, id_data) -> ScorerState:
    from ood_jax import data  # pylint: disable=import-outside-toplevel
    if not self.aux:
      raise InvalidInputError(
          f"{self.name}: needs an auxiliary OOD dataset: set aux='<dataset name>' (e.g. "
          "aux='svhn'); this score is supervised and is fitted on OOD examples.")
    _check_encoder(model, self.name)
    if id_data is None:
      raise InvalidInputError(f"{self.name}: needs in-distribution training images (id_data).")
    hwc = tuple(model.image_shape)
    id_data = validate_images(id_data, what=f"{self.name} training set", hwc=hwc)
    aux = data.load(self.aux, self.aux_split, data_dir=self.data_dir, n=self.n_aux,
                    seed=self.seed, like=hwc)
    if tuple(aux.x.shape[1:]) != hwc:
      raise InvalidInputError(
          f"{self.name}: auxiliary set {self.aux!r} ({self.aux_split}, {aux.source}) has images "
          f"of shape {tuple(aux.x.shape[1:])}, the model needs {hwc}; add transforms to the "
          f"name, e.g. aux='{self.aux}+resize:{hwc[0]}', and '+gray' / '+rgb' for the channels.")
    x_id = id_data if self.n_id is None else id_data[:int(self.n_id)]
    z_id = encode_means(model, variables, x_id, self.batch_size)
    z_aux = encode_means(model, variables, aux.x, self.batch_size)
    w, b = fit_linear_svm(z_id, z_aux, C=self.C, seed=self.seed, standardize=self.standardize,
                          solver=self.solver)
    mean_fn = _mean_fn(model)

    def chunk_fn(p, x, rng):
      del rng
      return -(mean_fn(p["variables"], x) @ p["w"] + p["b"])

    params = {"variables": variables, "w": jnp.asarray(w, jnp.float32),
              "b": jnp.float32(b)}
    return ScorerState(params=batches.replicate(params), chunk_fn=jax.jit(chunk_fn),
                       image_shape=hwc, name=self.name)
