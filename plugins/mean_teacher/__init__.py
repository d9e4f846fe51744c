"""spinebench_mean_teacher: the mean_teacher method plugin for spinebench."""
