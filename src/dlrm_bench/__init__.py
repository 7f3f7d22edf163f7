"""dlrm-bench: the MLPerf Inference DLRM benchmark system on PyTorch and OpenAI Triton."""

__version__ = "0.1.0"
