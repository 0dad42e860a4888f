"""The math of Song et al.'s two toy examples (§3, Fig. 1 right; §4.2.1 / App. D, Fig. 2).

Units: natural logarithms throughout; densities of real-valued points (no pixels, no bits).

**1-D mis-specification (§3).** ``p = 1/2 N(-1, v) + 1/2 N(1, v)`` with ``v = 0.01`` a
*variance* (the paper writes its model ``N(mu, sigma^2)``, so the second argument is a
variance); the model ``N(mu, sigma^2)`` fitted by maximum likelihood has the closed form
``mu* = E_p[x] = 0``, ``sigma*^2 = Var_p[x] = 1 + v`` (``sigma* = 1.005``). The OOD
distribution ``q`` (our choice, the paper names none in the text) is ``N(0, v)``: the model's
mode, where ``p`` has almost no mass.

**2-D BatchNorm coupling (App. D, Eqs. 12-19).** ``f(x1, x2) = (z1, z2)`` with ``z1 = x1``,
``z2 = x2 + (x1 - E(x1)) / sqrt(V(x1)) * gamma + beta``; ``E, V`` are the mean and (biased,
as BatchNorm's) variance of the batch's ``x1`` in train mode and those of ``p(x1)`` in eval
mode; no BatchNorm epsilon (App. D has none). The Jacobian (of one point in eval mode, of
the whole batch in train mode, in the order all ``x1`` then all ``x2``) is unit lower
triangular, so ``log |det| = 0`` and ``log p_f(x) = log phi(z1) + log phi(z2)`` with ``phi``
the standard normal density (the prior ``N(0, I)``). ``p(x1)`` is the two-point limit
(``sigma -> 0``) at ``-1, 1``, ``p(x2) = delta_0``; ``q(x1) = U(-0.5, 0.5)``, ``q(x2) =
delta_0``. The paper's parameters: ``gamma = 1`` (its footnote 4: ``argmax_s -s^2/2 + log s``),
``beta = 0``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ood_jax.errors import InvalidInputError

LOG_2PI = math.log(2.0 * math.pi)
MODES = (-1.0, 1.0)       # the mixture's component means (both examples)
VAR_1D = 0.01             # §3: N(+-1.0, 0.01), a variance
Q_HALF_WIDTH = 0.5        # App. D: q(x1) = U(-0.5, 0.5)


def _positive_int(value, what: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise InvalidInputError(f"{what} must be an integer >= 1, got {value!r}.")
  return int(value)


def _variance(var, what: str = "variance") -> float:
  if isinstance(var, bool) or not isinstance(var, (int, float, np.number)) or not (
      math.isfinite(float(var)) and float(var) >= 0.0):
    raise InvalidInputError(f"{what} must be a finite number >= 0, got {var!r}.")
  return float(var)


# ----------------------------------------------------------------------------- 1-D (§3)


def gauss_log_pdf(x, mu: float, var: float):
  """``log N(x; mu, var)`` elementwise (``var`` a variance > 0), nats."""
  x = np.asarray(x, np.float64)
  return -0.5 * (LOG_2PI + math.log(var)) - 0.5 * (x - mu) ** 2 / var


def mixture_log_pdf(x, var: float = VAR_1D):
  """``log p(x)`` of ``1/2 N(-1, var) + 1/2 N(1, var)`` elementwise, nats (logaddexp)."""
  a, b = (gauss_log_pdf(x, m, var) for m in MODES)
  return np.logaddexp(a, b) - math.log(2.0)


def sample_mixture(n: int, var: float = VAR_1D, seed: int = 0) -> np.ndarray:
  """``n`` float64 draws of the mixture (``var = 0``: the two points -1, 1)."""
  n, var = _positive_int(n, "n"), _variance(var)
  rng = np.random.default_rng([int(seed), 1])
  signs = np.where(rng.random(n) < 0.5, MODES[0], MODES[1])
  return signs + math.sqrt(var) * rng.standard_normal(n)


def ml_gaussian(x) -> tuple[float, float]:
  """Maximum-likelihood ``(mu, sigma)`` of ``N(mu, sigma^2)`` on points ``x``: the mean and
  the biased (1/n) standard deviation."""
  x = np.asarray(x, np.float64).ravel()
  if x.size < 1 or not np.all(np.isfinite(x)):
    raise InvalidInputError("ml_gaussian: expected at least one finite point.")
  mu = float(np.mean(x))
  return mu, float(np.sqrt(np.mean((x - mu) ** 2)))


def mixture_ml_fit(var: float = VAR_1D) -> tuple[float, float]:
  """The population ML fit ``(mu*, sigma*) = (E_p x, sqrt(Var_p x)) = (0, sqrt(1 + var))``."""
  return 0.0, math.sqrt(1.0 + _variance(var))


def expected_gauss_log_pdf(second_moment_about_mu: float, var: float) -> float:
  """``E[log N(x; mu, var)]`` for any ``x`` whose ``E[(x - mu)^2]`` is given, nats."""
  return -0.5 * (LOG_2PI + math.log(var)) - 0.5 * second_moment_about_mu / var


def one_d_closed_form(var: float = VAR_1D, q_var: float = VAR_1D) -> dict:
  """Exact values of the 1-D example: the ML fit, the model's expected log-likelihood of
  ``p`` and of ``q = N(0, q_var)``, the densities at x = 0 and ``KL(q || p_theta)`` (nats)."""
  var, q_var = _variance(var), _variance(q_var, "q_var")
  mu, sigma = mixture_ml_fit(var)
  s2 = sigma ** 2
  e_p = expected_gauss_log_pdf(1.0 + var + mu ** 2, s2)       # E_p (x - mu)^2, mu = 0
  e_q = expected_gauss_log_pdf(q_var + mu ** 2, s2)           # q = N(0, q_var)
  kl_q = 0.5 * (math.log(s2 / q_var) + q_var / s2 - 1.0) if q_var > 0 else math.inf
  return {"mu": mu, "sigma": sigma, "E_p_log_model": e_p, "E_q_log_model": e_q,
          "log_model_at_0": float(gauss_log_pdf(0.0, mu, s2)),
          "log_p_at_0": float(mixture_log_pdf(0.0, var)),
          "log_model_at_mode": float(gauss_log_pdf(1.0, mu, s2)),
          "kl_q_model": kl_q}


def kl_mixture_model(var: float = VAR_1D, n_grid: int = 400001, half_width: float = 4.0) -> float:
  """``KL(p || N(mu*, sigma*^2))``, nats, by the trapezoid rule on a fine grid (``p`` has no
  closed-form entropy); needs ``var > 0``."""
  var = _variance(var)
  if var <= 0:
    raise InvalidInputError("kl_mixture_model: the mixture needs a variance > 0 (a density).")
  mu, sigma = mixture_ml_fit(var)
  x = np.linspace(-half_width, half_width, int(n_grid))
  lp = mixture_log_pdf(x, var)
  return float(np.trapezoid(np.exp(lp) * (lp - gauss_log_pdf(x, mu, sigma ** 2)), x))


# ----------------------------------------------------------------------------- 2-D (App. D)


def log_phi(z):
  """Standard normal log density, elementwise (jnp), nats."""
  return -0.5 * LOG_2PI - 0.5 * jnp.square(z)


def batch_stats(x1):
  """Mean and biased variance of a batch of ``x1`` (``[b]``): BatchNorm's train-mode statistics."""
  m = jnp.mean(x1)
  return m, jnp.mean(jnp.square(x1 - m))


def coupling(x, gamma, beta, mean, var):
  """``f(x) = (x1, x2 + (x1 - mean) / sqrt(var) * gamma + beta)`` for points ``x`` ``[N, 2]``."""
  x1, x2 = x[..., 0], x[..., 1]
  z2 = x2 + (x1 - mean) / jnp.sqrt(var) * gamma + beta
  return jnp.stack([x1, z2], axis=-1)


def coupling_batch(x, gamma, beta, train: bool, running=(0.0, 1.0)):
  """``f`` of a whole batch ``x`` ``[b, 2]``: train mode normalises with the batch's own
  ``x1`` statistics (every output depends on every input), eval mode with ``running``."""
  mean, var = batch_stats(x[:, 0]) if train else running
  return coupling(x, gamma, beta, mean, var)


def coupling_log_det(x):
  """``log |det df/dx|`` per point, ``[b]``: 0 (unit triangular Jacobian, App. D; in train
  mode the batch Jacobian is unit block-triangular, x1 block before x2 block)."""
  return jnp.zeros(x.shape[:-1], jnp.float32)


def flow_log_prob(x, gamma=1.0, beta=0.0, train: bool = False, running=(0.0, 1.0)):
  """``log p_f(x) = log phi(z1) + log phi(z2) + log|det|`` per point of the batch ``x``
  ``[b, 2]``, nats (App. D, Eq. 15 with the prior N(0, I))."""
  z = coupling_batch(x, gamma, beta, train, running)
  return log_phi(z[:, 0]) + log_phi(z[:, 1]) + coupling_log_det(x)


def sample_p2(n: int, sigma2: float = 0.0, seed: int = 0) -> np.ndarray:
  """``n`` points of App. D's ``p``: ``x1`` from the mixture (variance ``sigma2``, 0 = the
  two-point limit), ``x2 = 0``; float32 ``[n, 2]``."""
  x1 = sample_mixture(n, sigma2, seed)
  return np.stack([x1, np.zeros_like(x1)], axis=1).astype(np.float32)


def sample_q2(n: int, seed: int = 0) -> np.ndarray:
  """``n`` points of App. D's ``q``: ``x1 ~ U(-0.5, 0.5)``, ``x2 = 0``; float32 ``[n, 2]``."""
  n = _positive_int(n, "n")
  x1 = np.random.default_rng([int(seed), 2]).uniform(-Q_HALF_WIDTH, Q_HALF_WIDTH, n)
  return np.stack([x1, np.zeros_like(x1)], axis=1).astype(np.float32)


P_MOMENTS = lambda sigma2: (0.0, 1.0 + sigma2)           # (mean, variance) of p(x1)
Q_MOMENTS = (0.0, (2 * Q_HALF_WIDTH) ** 2 / 12.0)        # of U(-0.5, 0.5): (0, 1/12)


def two_d_closed_form(gamma: float = 1.0, beta: float = 0.0, sigma2: float = 0.0) -> dict:
  """Exact ``E[log p_f]`` (nats) of ``p`` and ``q`` in eval mode (the statistics of ``p``)
  and in train mode with infinite batches (the statistics of the scored distribution):
  ``E log phi(x1) + E log phi(gamma (x1 - E) / sqrt(V) + beta)``, both means 0."""
  sigma2 = _variance(sigma2, "sigma2")
  run_mean, run_var = P_MOMENTS(sigma2)
  out = {}
  for name, (mean, var) in (("p", P_MOMENTS(sigma2)), ("q", Q_MOMENTS)):
    second = var + mean ** 2                        # E[x1^2]
    first = -0.5 * LOG_2PI - 0.5 * second
    for mode, (m, v) in (("eval", (run_mean, run_var)), ("train", (mean, var))):
      e_z2sq = gamma ** 2 * (var + (mean - m) ** 2) / v + 2 * gamma * beta * (mean - m) / math.sqrt(v) \
          + beta ** 2
      out[f"{name}_{mode}"] = first - 0.5 * LOG_2PI - 0.5 * e_z2sq
  return out


def _mc_mean(x: np.ndarray, batch: int, gamma: float, beta: float, train: bool, running) -> float:
  """Mean ``log p_f`` over ``x`` cut into whole batches of ``batch`` (the rest dropped)."""
  g = len(x) // batch
  if g < 1:
    raise InvalidInputError(f"monte carlo: {len(x)} points make no batch of {batch}.")
  xb = jnp.asarray(x[:g * batch].reshape(g, batch, 2))
  fn = jax.jit(jax.vmap(lambda b: flow_log_prob(b, gamma, beta, train, running)))
  return float(np.mean(np.asarray(fn(xb), np.float64)))


def two_d_monte_carlo(n: int, batch: int, gamma: float = 1.0, beta: float = 0.0,
                      sigma2: float = 0.0, seed: int = 0) -> dict:
  """The four ``E[log p_f]`` of :func:`two_d_closed_form` by Monte Carlo: ``n`` points of
  ``p`` and of ``q`` (seeded), eval mode with ``p``'s exact (running) statistics, train mode
  with the statistics of each batch of ``batch`` points; nats."""
  n, batch = _positive_int(n, "n"), _positive_int(batch, "batch")
  if batch < 2:
    raise InvalidInputError(f"batch must be >= 2 (BatchNorm needs a batch), got {batch}.")
  running = P_MOMENTS(_variance(sigma2, "sigma2"))
  xs = {"p": sample_p2(n, sigma2, seed), "q": sample_q2(n, seed)}
  return {f"{name}_{mode}": _mc_mean(x, batch, gamma, beta, mode == "train", running)
          for name, x in xs.items() for mode in ("eval", "train")}


def paper_gamma_objective(s):
  """Footnote 4's ``-s^2/2 + log s`` (maximised at ``s = 1``)."""
  return -0.5 * np.square(s) + np.log(s)


def stated_model_objective(gamma, beta, sigma2: float = 0.0):
  """``E_p[log p_f]`` in eval mode as a function of ``(gamma, beta)``, for the coupling exactly
  as App. D writes it (unit Jacobian): maximised at ``gamma = beta = 0``, not at the paper's
  ``gamma = 1`` (which footnote 4's ``+ log s`` term, absent from this model, would give)."""
  gamma, beta = np.asarray(gamma, np.float64), np.asarray(beta, np.float64)
  return (-0.5 * LOG_2PI - 0.5 * (1.0 + sigma2)) - 0.5 * LOG_2PI - 0.5 * (gamma ** 2 + beta ** 2)
