"""Thin sync and async transport twins, one module per layer; ``stack.py`` orders them."""
