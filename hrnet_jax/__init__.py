"""hrnet-jax: HRNet and HigherHRNet human pose estimation in JAX/Flax."""

__version__ = '0.1.0'
__all__ = ['PoseEstimator']


def __getattr__(name: str):
  """``PoseEstimator`` is imported on first use, so ``import hrnet_jax`` stays light."""
  if name == 'PoseEstimator':
    from hrnet_jax.estimator import PoseEstimator  # pylint: disable=g-import-not-at-top
    return PoseEstimator
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
