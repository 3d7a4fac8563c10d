"""Pure sizing: architecture, weight and KV-cache bytes, GPUs, parallelism and utilization."""
