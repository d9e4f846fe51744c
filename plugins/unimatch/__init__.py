"""spinebench_unimatch: the unimatch method plugin for spinebench."""
