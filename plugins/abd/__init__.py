"""Adaptive Bidirectional Displacement (ABD) as a spinebench method plugin."""
