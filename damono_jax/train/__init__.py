"""Training, read top-down: `loop` (the run) -> `step` (the jitted step) -> `state` -> models.

`step` and `state` import without TensorFlow, TFDS and clu (the GPU machine has none of them);
`loop`, `monitors` and `validation` bring clu's writers and the input pipeline.
"""
