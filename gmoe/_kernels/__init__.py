"""Numba kernels: arrays in, arrays out, no validation.

Each kernel has an independent numpy twin in ``tests/_reference.py``.
"""

from ._estep import e_step_into, e_step_serial_into
from ._softmax import log_softmax_into

__all__ = ["e_step_into", "e_step_serial_into", "log_softmax_into"]
