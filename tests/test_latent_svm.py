"""Latent-space linear SVM of Chen's thesis §3.3.7 (``ood_jax.scores.latent_svm``).

Pure helpers against brute-force formulas and scikit-learn, then the SUPERVISED
``latent_svm`` scorer on a tiny ConvVAE with an auxiliary set loaded by name from a tmp
data dir. Weights are drawn with numpy (no threefry compile), as in ``test_vae.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from ood_jax import scores
from ood_jax.data import local
from ood_jax.errors import InvalidInputError
from ood_jax.models import ConvVAE, UniformModel
from ood_jax.scores import latent_svm as ls


def _clouds(n, d, shift, seed=0):
  rng = np.random.default_rng(seed)
  pos = rng.normal(0.0, 1.0, (n, d))
  neg = rng.normal(0.0, 1.0, (n, d))
  neg[:, 0] += shift
  return pos, neg


# ---------------------------------------------------------------------------- the SVM
def test_separates_well_separated_clouds():
  pos, neg = _clouds(200, 5, shift=12.0)
  r = ls.separability(pos, neg, seed=0)
  assert (r.pos_acc, r.neg_acc, r.train_pos_acc, r.train_neg_acc) == (1.0, 1.0, 1.0, 1.0)
  assert r.w[0] < 0  # ID (pos) sits at lower z_0: the normal points from OOD to ID
  assert len(r.pos_test) == len(r.neg_test) == 100


@pytest.mark.parametrize("solver", ls.SOLVERS)
def test_chance_on_identical_clouds(solver):
  pos, neg = _clouds(1000, 4, shift=0.0, seed=1)
  r = ls.separability(pos, neg, seed=3, solver=solver)
  assert abs((r.pos_acc + r.neg_acc) / 2 - 0.5) < 0.05
  # and well above chance once the clouds differ by 2 std along one axis
  pos, neg = _clouds(1000, 4, shift=2.0, seed=1)
  r = ls.separability(pos, neg, seed=3, solver=solver)
  assert r.pos_acc > 0.8 and r.neg_acc > 0.8


def _scaled_codes(seed=0):
  """Overlapping codes whose features differ in scale by 1e4 and include a constant one, so
  the standardisation fold-back is not the identity."""
  pos, neg = _clouds(150, 4, shift=1.5, seed=seed)
  scale = np.array([1e3, 0.1, 7.0, 1.0])
  offset = np.array([50.0, -3.0, 0.0, 2.0])
  pos, neg = pos * scale + offset, neg * scale + offset
  pos[:, 3] = neg[:, 3] = 2.0    # constant feature: std 0 -> 1
  return pos, neg


@pytest.mark.parametrize("solver", ls.SOLVERS)
def test_fold_back_matches_sklearn_decision_function(solver):
  pos, neg = _scaled_codes()
  w, b = ls.fit_linear_svm(pos, neg, C=0.5, seed=2, solver=solver)
  clf = (LinearSVC(C=0.5, class_weight="balanced", random_state=2, max_iter=20000, dual="auto")
         if solver == "liblinear" else SVC(kernel="linear", C=0.5, class_weight="balanced"))
  pipe = make_pipeline(StandardScaler(), clf)
  x = np.concatenate([pos, neg])
  pipe.fit(x, np.r_[np.ones(len(pos)), np.zeros(len(neg))])
  z_new = _scaled_codes(seed=7)[0]
  z_new[:, 3] = np.random.default_rng(0).normal(2.0, 1.0, len(z_new))   # off the constant
  for z in (x, z_new):
    ref = pipe.decision_function(z)
    np.testing.assert_allclose(ls.decision(z, w, b), ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())
    np.testing.assert_array_equal(ls.decision(z, w, b) > 0, pipe.predict(z) == 1)
  # the constant feature (std 0) gets weight exactly 0 after the fold-back
  assert w[3] == 0.0 or abs(w[3]) < 1e-12


def test_unstandardized_is_sklearns_own_hyperplane():
  """(On unit-scale codes: libsvm on the 1e3-scaled ones takes over a minute.)"""
  pos, neg = _clouds(150, 4, shift=1.5, seed=2)
  w, b = ls.fit_linear_svm(pos, neg, solver="svc", standardize=False, balanced=False)
  clf = SVC(kernel="linear", C=1.0).fit(np.concatenate([pos, neg]),
                                        np.r_[np.ones(len(pos)), np.zeros(len(neg))])
  np.testing.assert_allclose(w, clf.coef_[0], rtol=1e-12)
  assert b == pytest.approx(float(clf.intercept_[0]), rel=1e-12)


def test_balanced_weights_matter_for_unequal_classes():
  """With 10x more OOD codes, unbalanced fitting trades ID accuracy for OOD accuracy."""
  rng = np.random.default_rng(0)
  pos = rng.normal(0, 1, (100, 2))
  neg = rng.normal(0, 1, (1000, 2)) + [1.0, 0.0]
  w_b, b_b = ls.fit_linear_svm(pos, neg, balanced=True)
  w_u, b_u = ls.fit_linear_svm(pos, neg, balanced=False)
  pa_b, na_b = ls.accuracies(w_b, b_b, pos, neg)
  pa_u, na_u = ls.accuracies(w_u, b_u, pos, neg)
  assert pa_b > pa_u and na_u > na_b
  assert abs(pa_b - na_b) < 0.15


def test_svm_input_errors():
  pos, neg = _clouds(10, 3, 1.0)
  with pytest.raises(InvalidInputError, match="dimension"):
    ls.fit_linear_svm(pos, neg[:, :2])
  with pytest.raises(InvalidInputError, match="NaN"):
    ls.fit_linear_svm(np.where(pos > 1, np.nan, pos), neg)
  with pytest.raises(InvalidInputError, match="solver"):
    ls.fit_linear_svm(pos, neg, solver="sgd")
  with pytest.raises(InvalidInputError, match="C must be"):
    ls.fit_linear_svm(pos, neg, C=0.0)
  with pytest.raises(InvalidInputError, match="2-D"):
    ls.fit_linear_svm(pos[0], neg)


# ---------------------------------------------------------------------------- distances
def test_decision_and_geometric_distance_brute_force():
  rng = np.random.default_rng(4)
  w, b = rng.normal(size=6), 0.7
  z = rng.normal(size=(9, 6)) * 3
  brute_d = np.array([sum(w[i] * zz[i] for i in range(6)) + b for zz in z])
  np.testing.assert_allclose(ls.decision(z, w, b), brute_d, rtol=1e-12)
  # Geometric: distance from z to a point x0 of the plane, projected off the plane's null
  # space (an independent construction: x0 = -b/w_0 e_0, basis from scipy's null_space).
  x0 = np.zeros(6)
  x0[0] = -b / w[0]
  basis = scipy.linalg.null_space(w[None, :])          # 6 x 5, orthonormal, w-orthogonal
  r = z - x0
  perp = r - (r @ basis) @ basis.T
  brute_g = np.linalg.norm(perp, axis=1) * np.sign(brute_d)
  g = ls.geometric_distance(z, w, b)
  np.testing.assert_allclose(g, brute_g, rtol=1e-10)
  # scaling (w, b) changes d but not the geometric distance
  np.testing.assert_allclose(ls.geometric_distance(z, 5 * w, 5 * b), g, rtol=1e-12)
  np.testing.assert_allclose(ls.decision(z, 5 * w, 5 * b), 5 * brute_d, rtol=1e-12)
  with pytest.raises(InvalidInputError, match="zero vector"):
    ls.geometric_distance(z, np.zeros(6), 1.0)
  with pytest.raises(InvalidInputError, match="dimension"):
    ls.decision(z[:, :5], w, b)


def test_accuracies_hand_example():
  w, b = np.array([1.0, 0.0]), -1.0
  pos = np.array([[2.0, 0.0], [0.0, 0.0], [1.0, 5.0]])     # d = 1, -1, 0 (boundary: wrong)
  neg = np.array([[0.0, 0.0], [3.0, 3.0]])                 # d = -1, 2
  assert ls.accuracies(w, b, pos, neg) == (pytest.approx(1 / 3), 0.5)
  assert ls.accuracies(-w, -b, pos, neg) == (pytest.approx(1 / 3), 0.5)  # boundary: wrong both ways
  assert ls.accuracies(w, b, pos[:1], neg[:1]) == (1.0, 1.0)


# ---------------------------------------------------------------------------- the grid
@pytest.mark.parametrize("num_steps,step", [(5, 2.0), (7, 2.0), (5, 0.5), (1, 2.0), (3, 1.0)])
def test_boundary_grid_centre_and_spacing(num_steps, step):
  rng = np.random.default_rng(5)
  w, b = rng.normal(size=4) * 3, -0.4
  z = rng.normal(size=(6, 4)) * 2
  grid = ls.boundary_grid(z, w, b, num_steps, step)
  assert grid.shape == (6, num_steps, 4)
  g = ls.geometric_distance(z, w, b)
  m = (num_steps - 1) // 2
  dist = ls.geometric_distance(grid.reshape(-1, 4), w, b).reshape(6, num_steps)
  scale = np.abs(z).max() * np.abs(w).max()
  np.testing.assert_allclose(ls.decision(grid[:, m], w, b), 0.0, atol=1e-12 * scale)
  np.testing.assert_allclose(dist, np.arange(-m, m + 1)[None, :] * step * np.abs(g)[:, None],
                             atol=1e-12 * scale)
  gaps = np.broadcast_to(step * np.abs(g)[:, None], (6, num_steps - 1))
  np.testing.assert_allclose(np.diff(dist, axis=1), gaps, atol=1e-12 * scale)
  # every column lies on the normal through z: column - z is parallel to w
  d = grid - z[:, None, :]
  perp = d - (d @ w)[..., None] * w / (w @ w)
  np.testing.assert_allclose(perp, 0.0, atol=1e-12 * scale)


def test_boundary_grid_where_the_code_sits():
  w, b = np.array([2.0, 0.0]), -2.0            # boundary x_0 = 1, normal +e_0, |w| = 2
  z = np.array([[4.0, 1.0], [-1.0, 3.0]])      # geometric distances +3 (ID side), -2 (OOD)
  grid = ls.boundary_grid(z, w, b, 5)          # step 2: offsets 0, +-2|g|, +-4|g|
  np.testing.assert_allclose(grid[0, :, 0], [1 - 12, 1 - 6, 1, 1 + 6, 1 + 12])
  np.testing.assert_allclose(grid[1, :, 0], [1 - 8, 1 - 4, 1, 1 + 4, 1 + 8])
  np.testing.assert_allclose(grid[:, :, 1], [[1.0] * 5, [3.0] * 5])
  # z is at j = sign(g) / 2: boundary point + g w_hat; not a column at step 2
  assert not np.any(np.all(np.isclose(grid[0], z[0]), axis=1))
  # step = 1/m: the end columns are the code and its mirror image, OOD side first
  grid = ls.boundary_grid(z, w, b, 5, step=0.5)
  np.testing.assert_allclose(grid[0, -1], z[0])
  np.testing.assert_allclose(grid[0, 0], [1 - 3, 1.0])
  np.testing.assert_allclose(grid[1, 0], z[1])
  np.testing.assert_allclose(grid[1, -1], [1 + 2, 3.0])
  # a code on the boundary: copies of itself
  np.testing.assert_allclose(ls.boundary_grid(np.array([[1.0, 5.0]]), w, b, 3)[0],
                             [[1.0, 5.0]] * 3)
  for bad in (4, 0, 2.0, True):
    with pytest.raises(InvalidInputError, match="odd"):
      ls.boundary_grid(z, w, b, bad)
  with pytest.raises(InvalidInputError, match="step"):
    ls.boundary_grid(z, w, b, 3, step=0.0)


def test_hardest():
  w, b = np.array([1.0, 0.0]), 0.0
  z = np.array([[3.0, 0], [-0.5, 0], [0.1, 9], [0.5, 0], [-2, 0]])
  np.testing.assert_array_equal(ls.hardest(z, w, b, 3), [2, 1, 3])   # 0.5 tie: index order
  assert ls.hardest(z, w, b, 5).dtype == np.int64
  for bad in (0, 6):
    with pytest.raises(InvalidInputError, match="k must be"):
      ls.hardest(z, w, b, bad)


# ---------------------------------------------------------------------------- split / projection
def test_split_codes():
  tr, te = ls.split_codes(11, seed=0)
  assert len(te) == 6 and len(tr) == 5          # round(11 * 0.5) = 6
  assert sorted(np.concatenate([tr, te]).tolist()) == list(range(11))
  assert np.all(np.diff(tr) > 0) and np.all(np.diff(te) > 0)
  again = ls.split_codes(11, seed=0)
  np.testing.assert_array_equal(again[1], te)
  assert not np.array_equal(ls.split_codes(100, 0)[1], ls.split_codes(100, 1)[1])
  assert not np.array_equal(ls.split_codes(100, 0, stream=0)[1],
                            ls.split_codes(100, 0, stream=1)[1])
  assert len(ls.split_codes(100, 0, test_fraction=0.3)[1]) == 30
  assert [len(p) for p in ls.split_codes(2, 0, test_fraction=0.01)] == [1, 1]
  with pytest.raises(InvalidInputError, match="n >= 2"):
    ls.split_codes(1, 0)
  with pytest.raises(InvalidInputError, match="test_fraction"):
    ls.split_codes(10, 0, test_fraction=1.0)


def test_random_projection():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (7, 8, 8, 3), dtype=np.uint8)
  p = ls.random_projection(x, 5, seed=3)
  assert p.shape == (7, 5) and p.dtype == np.float32
  np.testing.assert_array_equal(p, ls.random_projection(x, 5, seed=3))
  np.testing.assert_allclose(p, ls.random_projection(x, 5, seed=3, chunk=2), rtol=1e-6)
  assert not np.allclose(p, ls.random_projection(x, 5, seed=4))
  g = np.random.default_rng(3).standard_normal((192, 5))
  ref = np.array([[sum(xi / 255 * g[i, j] for i, xi in enumerate(row)) / np.sqrt(192)
                   for j in range(5)] for row in x.reshape(7, -1).astype(np.float64)])
  np.testing.assert_allclose(p, ref, rtol=1e-6, atol=1e-7)
  # the 1/sqrt(D) scaling: E|Px|^2 = dim |x/255|^2 / D
  big = ls.random_projection(x, 4000, seed=1)
  ratio = (big ** 2).sum(1) / ((x.reshape(7, -1) / 255.0) ** 2).sum(1)
  np.testing.assert_allclose(ratio, 4000 / 192, rtol=0.1)
  # the same image row projects the same, wherever it is in the batch
  np.testing.assert_allclose(ls.random_projection(x[3:4], 5, seed=3), p[3:4], rtol=1e-6)
  with pytest.raises(InvalidInputError, match="dim"):
    ls.random_projection(x, 0)
  with pytest.raises(InvalidInputError, match="uint8"):
    ls.random_projection(x.astype(np.float32), 3)


# ---------------------------------------------------------------------------- the scorer
def _init(model, x, seed=0):
  shapes = jax.eval_shape(
      lambda: model.init({"params": jax.random.key(0), "sample": jax.random.key(1)}, x,
                         train=False))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if name == "kernel":
      return jnp.asarray(rng.normal(0, 0.1, s.shape), s.dtype)
    if name in ("scale", "var"):
      return jnp.ones(s.shape, s.dtype)
    return jnp.zeros(s.shape, s.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def vae():
  model = ConvVAE(image_shape=(32, 32, 1), latent_dim=4, ngf=4, likelihood="bernoulli")
  return model, _init(model, np.zeros((2, 32, 32, 1), np.uint8))


def _dark(n, seed):
  return np.random.default_rng(seed).integers(0, 40, (n, 32, 32, 1), dtype=np.uint8)


def _bright(n, seed):
  return np.random.default_rng(seed).integers(215, 256, (n, 32, 32, 1), dtype=np.uint8)


def test_registered():
  assert "latent_svm" in scores.known_scores()
  assert scores.scorer_class("latent_svm") is ls.LatentSVM
  assert scores.LatentSVM is ls.LatentSVM
  assert "SUPERVISED" in ls.LatentSVM.__doc__
  with pytest.raises(InvalidInputError, match="unknown|valid"):
    scores.get_scorer("latent_svm", aux="x", not_a_field=1)


def test_scorer_separates_dark_from_bright(vae, data_dir):
  model, variables = vae
  data_dir.write("brightaux", "train", _bright(40, 1))
  sc = scores.get_scorer("latent_svm", aux="brightaux", data_dir=str(data_dir.path), n_aux=30,
                         n_id=30, chunk_size=16, batch_size=16)
  state = sc.fit(model, variables, _dark(50, 2))
  s_id, s_aux = sc.score(state, _dark(20, 3)), sc.score(state, _bright(20, 4))
  for s in (s_id, s_aux):
    assert s.dtype == np.float32 and s.shape == (20,) and np.all(np.isfinite(s))
  assert s_id.max() < s_aux.min()
  assert np.all(s_id < 0) and np.all(s_aux > 0)      # -d: ID on the negative-score side
  # the score is -(w . mu + b) with the hyperplane in state.params, mu from encode_means
  mu = ls.encode_means(model, variables, _dark(20, 3), batch_size=7)
  assert mu.shape == (20, 4) and mu.dtype == np.float32
  ref = -ls.decision(mu, np.asarray(state.params["w"]), float(state.params["b"]))
  np.testing.assert_allclose(s_id, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
  mu_ref, _ = model.apply(variables, _dark(20, 3), train=False, method="encode")
  np.testing.assert_allclose(mu, np.asarray(mu_ref), rtol=1e-5, atol=1e-6)


def test_scorer_loads_aux_by_name_from_env(vae, tmp_path, monkeypatch):
  model, variables = vae
  np.savez(tmp_path / "darkaux_test.npz", x=_dark(12, 5))
  monkeypatch.setenv(local.ENV_DATA_DIR, str(tmp_path))
  sc = ls.LatentSVM(aux="darkaux", aux_split="test", n_aux=None, n_id=12)
  state = sc.fit(model, variables, _bright(12, 6))        # here ID is bright, aux dark
  assert sc.score(state, _dark(4, 7)).min() > sc.score(state, _bright(4, 8)).max()


def test_scorer_errors(vae, data_dir, monkeypatch):
  model, variables = vae
  with pytest.raises(InvalidInputError, match="aux="):
    ls.LatentSVM().fit(model, variables, _dark(4, 0))
  with pytest.raises(InvalidInputError, match="no 'encode' method"):
    ls.LatentSVM(aux="noise").fit(UniformModel((32, 32, 1)), {}, _dark(4, 0))
  with pytest.raises(InvalidInputError, match="id_data"):
    ls.LatentSVM(aux="noise").fit(model, variables, None)
  # aux at another shape: one clear error, before any image is encoded
  data_dir.write("smallaux", "train", _dark(6, 0)[:, :28, :28])
  monkeypatch.setattr(ls, "encode_means", lambda *a, **k: pytest.fail("encoded before checking"))
  with pytest.raises(InvalidInputError, match=r"\(28, 28, 1\).*\(32, 32, 1\).*resize:32"):
    ls.LatentSVM(aux="smallaux", data_dir=str(data_dir.path)).fit(model, variables, _dark(4, 0))
  with pytest.raises(InvalidInputError, match="n_id"):
    ls.LatentSVM(aux="noise", n_id=0).fit(model, variables, _dark(4, 0))
