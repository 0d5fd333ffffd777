"""The model and its data: the autoencoder, training, int8 conversion, datasets, evaluation.

Pure ML, no Flower and no registry: `autoencoder` (the network), `task` (training and
statistics, Flower's ``task.py``), `train` (centralised training, checkpoints), `convert`
(torch -> int8 ``.tflite``), `datasets` (feature rows from the gateway's own pipeline),
`evaluate` and `peers` (event-level evaluation against peer detectors).
"""
