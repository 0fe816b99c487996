"""Synthesized anomalies for training the projections from normal images only.

The stable import path of the synthesizer; the implementation lives in ``datasets/synthesis/``
(one file per concept: Perlin noise and shapes, foreground estimation, textures, defect kinds,
the synthesizer). It shares no code with ``datasets/synthetic.py``, which draws the test defects.

    from datasets.anomaly_synthesis import AnomalySynthesizer
    synth = AnomalySynthesizer(seed=0, texture_dir=None)
    image_with_defect, mask = synth.synth(image, epoch, index)   # mask: (H, W) bool
"""
from .synthesis import (
                        DEFAULT_WEIGHTS,
                        DEFECTS,
                        KINDS,
                        AnomalySynthesizer,
                        TextureFolder,
                        estimate_foreground,
                        perlin_noise,
)

__all__ = ["AnomalySynthesizer", "DEFAULT_WEIGHTS", "DEFECTS", "KINDS", "TextureFolder",
           "estimate_foreground", "perlin_noise"]
