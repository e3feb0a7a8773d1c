"""Numba kernels: arrays in, arrays out, no validation.

Each kernel has an independent numpy twin in ``tests/_reference.py``.
"""

from ._estep import e_step_into, e_step_serial_into

__all__ = ["e_step_into", "e_step_serial_into"]
