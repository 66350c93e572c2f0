"""The model record: an interaction potential on a torus of length L at inverse temperature beta."""

import dataclasses

from . import validation
from .potentials import Potential


@dataclasses.dataclass(frozen=True)
class Model:
    """Particles or a density on the torus ``[0, L)`` interacting through ``potential``.

    Parameters
    ----------
    potential : Potential
        The interaction potential W.
    L : float
        Length of the torus, > 0.
    beta : float
        Inverse temperature, > 0; the noise strength is ``1/beta``.

    Raises
    ------
    ValueError
        If ``L`` or ``beta`` is not a finite positive number, if a local
        potential's range ``ell`` is not below ``L/2`` (its periodic copies
        would overlap), or if a Kuramoto potential has another period than ``L``.
    """

    potential: Potential
    L: float = 1.0
    beta: float = 1.0

    def __post_init__(self):
        if not isinstance(self.potential, Potential):
            raise TypeError(f"potential must be an mvlib potential, got {type(self.potential).__name__}")
        object.__setattr__(self, "L", validation.positive("L", self.L))
        object.__setattr__(self, "beta", validation.positive("beta", self.beta))
        if self.potential.is_local and not self.potential.range < self.L / 2:
            raise ValueError(
                f"ell = {self.potential.range!r} is invalid: the range of a local potential "
                f"must lie in (0, L/2) = (0, {self.L / 2:g})"
            )
        if not self.potential.is_local and self.potential.L != self.L:
            raise ValueError(
                f"potential.L = {self.potential.L!r} is invalid: a Kuramoto potential "
                f"must have the torus length of the model, L = {self.L!r}"
            )

    @property
    def gamma(self):
        """Interaction strength of the potential."""
        return self.potential.gamma

    def with_gamma(self, gamma):
        """Return the same model with interaction strength ``gamma``."""
        return dataclasses.replace(self, potential=self.potential.with_gamma(gamma))
