"""Gradient reversal layer (Ganin & Lempitsky, 2015) as a `jax.custom_vjp`.

The scale is an ordinary (traced) array argument rather than a `nondiff_argnums` entry, so a
scheduled scale (DANN's 2 / (1 + exp(-gamma p)) - 1) is a jit argument and never recompiles;
`nondiff_argnums` rejects tracers (jax-ml/jax#12982).
"""

import jax
import jax.numpy as jnp


@jax.custom_vjp
def _reverse_gradient(x: jax.Array, scale: jax.Array) -> jax.Array:
    return x


def _reverse_gradient_fwd(x: jax.Array, scale: jax.Array) -> tuple[jax.Array, jax.Array]:
    return x, scale


def _reverse_gradient_bwd(scale: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    # The scale receives no gradient: it is a schedule, not a parameter.
    return (-scale.astype(g.dtype) * g, jnp.zeros_like(scale))


_reverse_gradient.defvjp(_reverse_gradient_fwd, _reverse_gradient_bwd)


def gradient_reversal(x: jax.Array, scale: jax.Array | float) -> jax.Array:
    """Identity in the forward pass; multiplies the incoming gradient by `-scale` backwards.

    Args:
      x: any array (the encoder bottleneck in DA-Monodepth).
      scale: scalar, a Python float or a (traced) array; converted to a float32 scalar array.

    Returns:
      `x` unchanged. The gradient with respect to `x` is `-scale * g`; `scale` gets zero.
    """
    scale = jnp.asarray(scale, dtype=jnp.float32)
    if scale.ndim != 0:
        raise ValueError(f"gradient_reversal: scale must be a scalar, got shape {scale.shape}")
    return _reverse_gradient(x, scale)
