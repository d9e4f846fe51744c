"""Hook implementations of the cps4 plugin (the method lands with its issue)."""
