"""Pure: read quantization configs of every producer; decide what vLLM loads, on which kernel."""
