"""Prediction with an exported model, read top-down: `run` (the batched loop) -> `inputs`
(reading images) and `writers` (the output files). `damono_jax.predict` is its command line.
"""
