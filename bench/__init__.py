"""Benchmarking: timing, memory, training step, parity, result records and reports."""
