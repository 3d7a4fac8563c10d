"""quantwise: quantize an LLM, prove vLLM loads it fast, size it and serve it on Kubernetes."""

__version__ = "0.1.0"

API_GROUP = "quantwise.dev"
API_VERSION = "v1alpha1"
API_GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"
KIND = "QuantizedModel"
PLURAL = "quantizedmodels"
