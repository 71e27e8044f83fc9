"""Serving, read top-down: a checkpoint or an export -> the inference network -> models.

Nothing here builds the optimiser's state or imports PyTorch: a checkpoint is restored into
`jax.eval_shape` shapes, so a run started from a torchvision `.pth` exports and evaluates
after that file is gone.
"""
