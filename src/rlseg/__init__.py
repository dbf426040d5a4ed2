"""rlseg: weakly supervised segmentation with regularized loss (Veksler, ECCV 2020)."""

__version__ = "0.1.0"
