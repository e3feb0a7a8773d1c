"""The distances between a fit and its truth that a study records on its evaluation design.

Each :class:`DesignDistance` is one boolean key of a study file's ``[metrics]`` table, the
result column that holds it and the function that computes it. The study file's keys,
the columns (:mod:`gmoe.simulation.columns`) and the tasks (:mod:`gmoe.simulation.tasks`)
are all read from :data:`DESIGN_DISTANCES`: adding a distance to the harness is one entry
here, with its function in :mod:`gmoe.metrics`. Its expected rate is the row of
:mod:`gmoe.theory` named by the column; a column the rate table does not name is fitted
and reported with no stated rate.
"""

from collections.abc import Callable
from dataclasses import dataclass

from ..metrics import hellinger, total_variation

__all__ = ["DESIGN_DISTANCES", "DesignDistance", "distance_keys"]


@dataclass(frozen=True)
class DesignDistance:
    """A distance a study can record: its ``[metrics]`` key, its column, its function.

    Parameters
    ----------
    key : str
        The boolean key of ``[metrics]`` that records it (``hellinger = true``).
    column : str
        Its column in the result rows and the store (and its row of the rate table).
    function : callable
        ``function(fitted, truth, X) -> float``: the expected distance between the fitted
        and the true conditional densities over the evaluation design ``X``.
    """

    key: str
    column: str
    function: Callable


#: The distances the harness can record, in the order of their columns.
DESIGN_DISTANCES = (
    DesignDistance("hellinger", "hellinger", hellinger),
    DesignDistance("total_variation", "tv", total_variation),
)


def distance_keys(reserved):
    """The ``[metrics]`` keys of :data:`DESIGN_DISTANCES`, checked against each other.

    Parameters
    ----------
    reserved : sequence of str
        The other keys of ``[metrics]``.

    Returns
    -------
    list of str

    Raises
    ------
    ValueError
        If two entries share a key, or an entry has a reserved one.
    """
    keys = [d.key for d in DESIGN_DISTANCES]
    if len(set(keys)) != len(keys) or set(keys) & set(reserved):
        raise ValueError(f"gmoe.simulation.distances.DESIGN_DISTANCES repeats a key of "
                         f"[metrics] ({', '.join(reserved)} and its own): each entry needs "
                         "a key of its own.")
    return keys
