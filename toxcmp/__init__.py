"""toxcmp: run a policy-following LLM classifier on several inference backends and compare them."""

from __future__ import annotations

__version__ = "0.1.0"

from toxcmp.core import InferenceBackend, classify, get_model_response  # noqa: E402
from toxcmp.domain.responses import ClassificationResult, ModelResponse  # noqa: E402

__all__ = ["ClassificationResult", "InferenceBackend", "ModelResponse", "__version__", "classify",
           "get_model_response"]
