"""Compilation options shared by every kernel."""

# No fastmath: the E-step must match the numpy reference to 1e-12 relative on extreme
# inputs (|y| ~ 1e8, tiny variances), and it is memory-bound, so fastmath buys nothing.
NJIT = dict(cache=True, fastmath=False, error_model="numpy", nogil=True)
# Every kernel is its own Python function: numba's on-disk cache is keyed by the function's
# name and line, so two dispatchers built from one function would load each other's code.
