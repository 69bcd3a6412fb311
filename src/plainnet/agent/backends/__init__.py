"""Routing backends: each computes, from accepted peers, the kernel state it wants.

One module per backend; a backend is pure and never touches the kernel itself.
"""
