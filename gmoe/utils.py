"""Random-state handling shared by the whole package."""

import numbers

import numpy as np


def check_random_state(random_state):
    """Turn ``random_state`` into a :class:`numpy.random.Generator`.

    Parameters
    ----------
    random_state : None, int, SeedSequence, Generator or RandomState
        ``None`` draws fresh entropy; an int or a ``SeedSequence`` seeds a new
        generator; a ``Generator`` is returned as is; a legacy ``RandomState``
        seeds a new generator from one draw of it (so that it still advances).

    Returns
    -------
    numpy.random.Generator
    """
    if random_state is None or isinstance(random_state, np.random.SeedSequence):
        return np.random.default_rng(random_state)
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(
                f"random_state must be a non-negative integer, got random_state={random_state}."
            )
        return np.random.default_rng(int(random_state))
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    raise ValueError(
        "random_state must be None, an int, a SeedSequence, a numpy Generator or a "
        f"RandomState, got {type(random_state).__name__}: {random_state!r}."
    )
