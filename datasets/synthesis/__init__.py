"""Anomaly synthesis from normal images (DRAEM- and CutPaste-style defects with exact masks).

``AnomalySynthesizer(seed).synth(image, epoch, index) -> (image, mask)``; see ``synthesizer.py``
for the procedure and ``defects.py`` for the defect kinds.
"""
from .defects import DEFECTS, Canvas
from .foreground import estimate_foreground
from .noise import fractal_noise, perlin_noise, region_field
from .synthesizer import DEFAULT_WEIGHTS, KINDS, AnomalySynthesizer
from .textures import PATTERNS, TextureFolder, procedural_texture

__all__ = ["AnomalySynthesizer", "Canvas", "DEFAULT_WEIGHTS", "DEFECTS", "KINDS", "PATTERNS",
           "TextureFolder", "estimate_foreground", "fractal_noise", "perlin_noise",
           "procedural_texture", "region_field"]
