"""spinebench_clipseg: the clipseg method plugin for spinebench."""
