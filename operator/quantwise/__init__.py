"""quantwise: quantize an LLM, prove vLLM loads it fast, size it and serve it on Kubernetes."""

__version__ = "0.1.0"

API_GROUP = "quantwise.dev"
API_VERSION = "v1alpha1"
KIND = "QuantizedModel"
PLURAL = "quantizedmodels"
