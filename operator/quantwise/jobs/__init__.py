"""What runs inside the quantization and inspection Jobs.

``quantwise quantize`` (llm-compressor) and ``quantwise inspect`` (an existing checkpoint) both
end by writing one report (quantwise.api.report) to the termination message, which is all the
operator ever reads of a Job. Heavy libraries (torch, transformers, llm-compressor, datasets)
are imported only inside the functions that need them, so the operator image never carries them.
"""
