"""Image data: loading named sets, dataset preprocessing, transforms and pixel conventions.

    from ood_jax import data
    train = data.load("fashion_mnist+resize:32", "train")       # ImageSet, x uint8 NHWC
    ood = data.load("noise", like=train.x.shape[1:], n=2000)
    x = data.conform(other_x, (32, 32, 1))
    labels = train.y                                             # int64 [N], or None
    feats = data.load_features("cifar10", "train", "my_features")  # FeatureSet, x float32 N x D

``tensorflow_datasets`` is imported lazily, only when a TFDS copy is actually read.
"""

from ood_jax.data.features import FeatureSet, load_features, validate_features
from ood_jax.data.pixels import bits_per_dim, dequantize, num_dims, to_unit, validate_images
from ood_jax.data.registry import DATASETS, ImageSet, load
from ood_jax.data.transforms import TRANSFORMS, apply_transforms, conform, is_transform, parse_spec

__all__ = [
    "DATASETS", "TRANSFORMS", "FeatureSet", "ImageSet", "apply_transforms", "bits_per_dim",
    "conform", "dequantize", "is_transform", "load", "load_features", "num_dims", "parse_spec",
    "to_unit", "validate_features", "validate_images",
]
