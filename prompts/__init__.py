"""Prompt ensemble: editable state/template files and the text-feature encoder (METHOD §3)."""
from .checks import PromptError
from .ensemble import PROMPT_DIR, PromptSet, TextFeatureBank, build_prompts, ensemble_text_features, load_prompts

__all__ = ["PROMPT_DIR", "PromptError", "PromptSet", "TextFeatureBank", "build_prompts",
           "ensemble_text_features", "load_prompts"]
