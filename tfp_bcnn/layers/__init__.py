"""Bayesian Keras 3 layers: {Conv1D, Conv2D, Conv3D, Dense} x three estimators.

Also `GaussianHead` (regression output) and `MCDropout` (dropout that stays
on at inference, the Monte Carlo dropout baseline).

Every class is ``BayesianLayer`` with a rank and an estimator fixed; see its
docstring for the posterior, the estimators and the KL term.
"""

from ._base import ESTIMATORS, BayesianLayer
from ._dropout import MCDropout
from ._head import GaussianHead, gaussian_nll
from ._public import (
    LAYER_CLASSES,
    BayesianConv,
    BayesianDense,
    Conv1DFlipout,
    Conv1DLocalReparameterization,
    Conv1DReparameterization,
    Conv2DFlipout,
    Conv2DLocalReparameterization,
    Conv2DReparameterization,
    Conv3DFlipout,
    Conv3DLocalReparameterization,
    Conv3DReparameterization,
    DenseFlipout,
    DenseLocalReparameterization,
    DenseReparameterization,
    layer_class,
)

__all__ = [
    "ESTIMATORS",
    "LAYER_CLASSES",
    "BayesianLayer",
    "BayesianConv",
    "BayesianDense",
    "Conv1DFlipout",
    "Conv1DLocalReparameterization",
    "Conv1DReparameterization",
    "Conv2DFlipout",
    "Conv2DLocalReparameterization",
    "Conv2DReparameterization",
    "Conv3DFlipout",
    "Conv3DLocalReparameterization",
    "Conv3DReparameterization",
    "DenseFlipout",
    "DenseLocalReparameterization",
    "DenseReparameterization",
    "GaussianHead",
    "MCDropout",
    "gaussian_nll",
    "layer_class",
]
