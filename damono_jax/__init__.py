"""damono_jax: DA-Monodepth (domain adaptive monocular depth with semantics) in JAX/Flax."""

__version__ = "0.1.0"
