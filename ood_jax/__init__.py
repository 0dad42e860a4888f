"""ood-jax: out-of-distribution detection with deep generative models, in JAX/Flax.

Layers import only downward: data -> models -> train -> scores -> experiments.
"""

__version__ = "0.1.0"
