"""The OpenAI CLIP normalisation of every input image: x = (rgb / 255 - mean) / std per channel.

A leaf module (no torch), so that light readers (the ONNX sidecar) share the one definition.
"""
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
