"""spinebench_cps4: the cps4 method plugin for spinebench."""
