"""Hook implementations of the clipseg plugin (the method lands with its issue)."""
