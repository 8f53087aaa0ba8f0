"""Models: the card of a model directory, loading it, the reference and exact backbones, training."""
