"""Hook implementations of the mean_teacher plugin (the method lands with its issue)."""
