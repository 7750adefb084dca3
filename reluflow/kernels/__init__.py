"""Exact evaluation kernels."""
