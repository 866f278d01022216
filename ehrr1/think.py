"""The think block: the tags around a model's reasoning, as Qwen3 writes them (a leaf: no imports)."""

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CLOSED_THINK = "<think>\n\n</think>\n"  # appended by models without a thinking switch to turn reasoning off
