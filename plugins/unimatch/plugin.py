"""Hook implementations of the unimatch plugin (the method lands with its issue)."""
