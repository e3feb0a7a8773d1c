"""Warnings raised by gmoe."""


class GMoEWarning(UserWarning):
    """Base class of the warnings that gmoe raises."""


class DegenerateExpertWarning(GMoEWarning):
    """An expert's weight or variance collapsed during fitting."""


class SingularInformationWarning(GMoEWarning):
    """The observed information matrix is singular or not positive definite."""


class RankDeficientDesignWarning(GMoEWarning):
    """The design is (numerically) rank-deficient, even after internal scaling."""
