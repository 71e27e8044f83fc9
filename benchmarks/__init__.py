"""Speed measurements of damono_jax; each script writes its section of BENCHMARKS.md."""
