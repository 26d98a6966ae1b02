"""tf.data input pipelines for hrnet-jax."""
