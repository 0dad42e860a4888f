"""Bijector layers of RealNVP / Glow flows, and the flow models built on them.

Every layer is a pure linen module with ``__call__(x, train, reverse=False) -> (y, logdet)``:
``x`` is float32 ``N x H x W x C``; ``logdet`` is float32 ``[N]``, ``log|det dy/dx|`` per
sample in nats (for ``reverse=True`` that of the inverse map, i.e. the negative).
BatchNorm mode is always the ``train`` argument.

Models (``FlowModel`` protocol, see ``flow_model.py``): ``RealNVP`` / ``make_realnvp``,
``Glow`` / ``make_glow`` / ``make_cv_glow``; st-networks in ``stnets.py``.
"""

from ood_jax.models.flows.actnorm import ActNorm
from ood_jax.models.flows.batchnorm_flow import BatchNormFlow
from ood_jax.models.flows.coupling import AdditiveCoupling, AffineCoupling, Coupling, SimpleSTNet
from ood_jax.models.flows.flow_model import FlowModel
from ood_jax.models.flows.glow import Glow, make_cv_glow, make_glow
from ood_jax.models.flows.invconv import InvConv1x1, InvConv1x1LU
from ood_jax.models.flows.logit import LogitTransform
from ood_jax.models.flows.masks import MASK_KINDS, mask_pair
from ood_jax.models.flows.realnvp import RealNVP, make_realnvp
from ood_jax.models.flows.squeeze import Squeeze, squeeze2x2, unsqueeze2x2
from ood_jax.models.flows.stnets import BatchNorm, GlowSTNet, ResNetSTNet

__all__ = [
    "ActNorm", "AdditiveCoupling", "AffineCoupling", "BatchNorm", "BatchNormFlow", "Coupling",
    "FlowModel", "Glow", "GlowSTNet", "InvConv1x1", "InvConv1x1LU", "LogitTransform",
    "MASK_KINDS", "RealNVP", "ResNetSTNet", "SimpleSTNet", "Squeeze", "make_cv_glow",
    "make_glow", "make_realnvp", "mask_pair", "squeeze2x2", "unsqueeze2x2",
]
