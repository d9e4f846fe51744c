"""Bidirectional Copy-Paste (BCP) as a spinebench method plugin."""
