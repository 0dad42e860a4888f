"""Bijector layers of RealNVP / Glow flows.

Every layer is a pure linen module with ``__call__(x, train, reverse=False) -> (y, logdet)``:
``x`` is float32 ``N x H x W x C``; ``logdet`` is float32 ``[N]``, ``log|det dy/dx|`` per
sample in nats (for ``reverse=True`` that of the inverse map, i.e. the negative).
BatchNorm mode is always the ``train`` argument.
"""

from ood_jax.models.flows.actnorm import ActNorm
from ood_jax.models.flows.batchnorm_flow import BatchNormFlow
from ood_jax.models.flows.coupling import AdditiveCoupling, AffineCoupling, Coupling, SimpleSTNet
from ood_jax.models.flows.invconv import InvConv1x1, InvConv1x1LU
from ood_jax.models.flows.logit import LogitTransform
from ood_jax.models.flows.masks import MASK_KINDS, mask_pair
from ood_jax.models.flows.squeeze import Squeeze, squeeze2x2, unsqueeze2x2

__all__ = [
    "ActNorm", "AdditiveCoupling", "AffineCoupling", "BatchNormFlow", "Coupling",
    "InvConv1x1", "InvConv1x1LU", "LogitTransform", "MASK_KINDS", "SimpleSTNet", "Squeeze",
    "mask_pair", "squeeze2x2", "unsqueeze2x2",
]
