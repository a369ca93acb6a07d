"""EDA's chunked form in PyTorch: backends ``torch`` (eager) and ``torch_compile``."""
