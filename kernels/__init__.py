"""Triton kernels with torch references; plain tensors in, plain tensors out."""
