"""Bijector layers of RealNVP / Glow flows, and the flow models built on them.

Every layer is a pure linen bijector (distrax's ``Bijector`` contract, written the linen way,
as big_vision's Jet flow): ``forward_and_log_det(x, train=False) -> (y, logdet)`` and
``inverse_and_log_det(y) -> (x, logdet)`` (``__call__`` is the forward). ``x`` is float32
``N x H x W x C``; ``logdet`` is float32 ``[N]``, nats per sample: ``log|det dy/dx|`` forward,
``log|det dx/dy|`` (the negative) inverse. BatchNorm mode is the ``train`` argument of the
forward; the inverse runs in eval mode (running statistics). Both directions share one
parameter setup (a compact ``_params``-style helper). ``constant_log_det(train) -> bool``
says whether the log-det is the same for every input. All derive from ``Bijector``
(``bijector.py``); ``Chain`` composes layers.
Coupling layers ``sow`` ``x_in``, ``s``, ``t``, ``y_out`` into ``'intermediates'``.

Models (``FlowModel`` protocol, see ``flow_model.py``): ``RealNVP`` / ``make_realnvp``,
``Glow`` / ``make_glow`` / ``make_cv_glow``; st-networks in ``stnets.py``; ``VectorRealNVP``
(couplings ``VectorCoupling`` on ``N x D`` vectors, Kirichenko et al. App. O).
"""

from ood_jax.models.flows.actnorm import ActNorm
from ood_jax.models.flows.batchnorm_flow import BatchNormFlow
from ood_jax.models.flows.bijector import Bijector
from ood_jax.models.flows.chain import Chain
from ood_jax.models.flows.coupling import AdditiveCoupling, AffineCoupling, Coupling, SimpleSTNet
from ood_jax.models.flows.flow_model import FlowModel
from ood_jax.models.flows.glow import CV_GLOW_SPEC, GLOW_SPEC, Glow, make_cv_glow, make_glow
from ood_jax.models.flows.invconv import InvConv1x1, InvConv1x1LU
from ood_jax.models.flows.logit import LogitTransform
from ood_jax.models.flows.masks import MASK_KINDS, mask_pair
from ood_jax.models.flows.realnvp import SPEC as REALNVP_SPEC
from ood_jax.models.flows.realnvp import RealNVP, make_realnvp
from ood_jax.models.flows.squeeze import Squeeze, squeeze2x2, unsqueeze2x2
from ood_jax.models.flows.stnets import BatchNorm, GlowSTNet, HighwaySTNet, ResNetSTNet
from ood_jax.models.flows.vector_realnvp import VectorCoupling, VectorRealNVP

__all__ = [
    "ActNorm", "Bijector", "AdditiveCoupling", "AffineCoupling", "BatchNorm", "BatchNormFlow", "CV_GLOW_SPEC",
    "Chain", "Coupling", "FlowModel", "GLOW_SPEC", "REALNVP_SPEC", "Glow", "GlowSTNet", "InvConv1x1", "InvConv1x1LU", "LogitTransform",
    "MASK_KINDS", "RealNVP", "ResNetSTNet", "SimpleSTNet", "Squeeze", "make_cv_glow",
    "make_glow", "make_realnvp", "mask_pair", "squeeze2x2", "unsqueeze2x2", "HighwaySTNet",
    "VectorCoupling", "VectorRealNVP",
]
