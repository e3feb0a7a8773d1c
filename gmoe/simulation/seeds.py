"""Seeds of the simulation tasks: one SeedSequence per ``(n, replication)``.

Task ``(n, rep)`` of an experiment with master seed ``s`` owns
``SeedSequence(s, spawn_key=(n, rep))``, so its numbers
depend on nothing else: not on the number of workers, the order the tasks run in, or the
rest of the grid. It spawns three child streams, always in this order:

==========  =====================  ==================================================
child       spawn key              used for
==========  =====================  ==================================================
0           ``(n, rep, 0)``        the data: the design ``X`` (when random), then ``y``
1           ``(n, rep, 1)``        the start: assignment and noise of the near-truth
                                   starts, one start after the other
2           ``(n, rep, 2)``        the fit: the estimator's ``random_state`` (an int)
==========  =====================  ==================================================

The evaluation design of the density distances, shared by all tasks, is drawn (when
random) from ``SeedSequence(s, spawn_key=(0,))``, which no task key can equal (``n >= 1``).
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["TaskStreams", "evaluation_seed_sequence", "task_seed_sequence", "task_streams"]


def task_seed_sequence(master_seed, n, rep):
    """The SeedSequence of task ``(n, rep)``.

    Parameters
    ----------
    master_seed : int
        The experiment's seed (>= 0).
    n : int
        Sample size.
    rep : int
        Replication index (from 0).

    Returns
    -------
    numpy.random.SeedSequence
        ``SeedSequence(master_seed, spawn_key=(n, rep))``.
    """
    return np.random.SeedSequence(int(master_seed), spawn_key=(int(n), int(rep)))


def evaluation_seed_sequence(master_seed):
    """The SeedSequence of the shared evaluation design: ``spawn_key=(0,)``.

    Parameters
    ----------
    master_seed : int

    Returns
    -------
    numpy.random.SeedSequence
    """
    return np.random.SeedSequence(int(master_seed), spawn_key=(0,))


@dataclass(frozen=True)
class TaskStreams:
    """The three random streams of one task (see the module documentation).

    Attributes
    ----------
    data : numpy.random.Generator
        Design and responses.
    start : numpy.random.Generator
        Near-truth start assignment and noise.
    fit_seed : int
        ``random_state`` of the estimator.
    """

    data: np.random.Generator
    start: np.random.Generator
    fit_seed: int


def task_streams(master_seed, n, rep):
    """The data, start and fit streams of task ``(n, rep)``.

    Parameters
    ----------
    master_seed : int
    n : int
    rep : int

    Returns
    -------
    TaskStreams

    Examples
    --------
    >>> a = task_streams(7, 100, 0)
    >>> b = task_streams(7, 100, 0)
    >>> float(a.data.random()) == float(b.data.random()) and a.fit_seed == b.fit_seed
    True
    """
    # spawn() on a fresh SeedSequence gives the children spawn_key + (0,), (1,), (2,).
    data, start, fit = task_seed_sequence(master_seed, n, rep).spawn(3)
    return TaskStreams(data=np.random.default_rng(data), start=np.random.default_rng(start),
                       fit_seed=int(fit.generate_state(1, dtype=np.uint32)[0]))
