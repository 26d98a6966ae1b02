"""hrnet-jax: HRNet and HigherHRNet human pose estimation in JAX/Flax."""

__version__ = '0.1.0'
