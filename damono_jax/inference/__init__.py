"""Serving, read top-down: an export (`export_format`) -> the inference network -> models.

`model` loads an export for prediction, `saved_model` and `onnx_model` convert it to the TF
SavedModel and ONNX and read those back, `batching` pads batches to fixed shapes. Nothing
here imports training code: a training checkpoint becomes an export in
`train.latest_checkpoint`.
"""
