"""Cross Pseudo Supervision (CPS) as a spinebench method plugin."""
