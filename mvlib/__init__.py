"""mvlib: particles and the mean-field PDE of weakly interacting diffusions on the torus.

Companion library of the book reproducing N. J. Gerber, R. S. Gvalani,
M. Hairer, G. A. Pavliotis and A. Schlichting, *Formation of clusters and
coarsening in weakly interacting diffusions*, arXiv:2510.17629.

Symbols follow the book's conventions: ``L`` torus length, ``M`` grid cells,
``N`` particles, ``beta`` inverse temperature, ``gamma`` interaction strength,
``ell`` interaction range.
"""

from . import _jit  # sets numba's cache folder before anything is compiled
from . import cache, claims, clusters, energy, particles, pde, profiles, rearrangement, stability, stationary, validation
from .claims import ClaimFailed, ClaimLedger
from .energy import FreeEnergy, free_energy, particle_interaction_energy, uniform_free_energy
from .grid import Grid
from .model import Model
from .potentials import HegselmannKrause, Kuramoto, PiecewiseParabolic, Potential
from .stability import fastest_mode, gamma_sharp, growth_rates, predicted_cluster_count

__version__ = "0.1.0"
SOURCE_HASH = _jit.SOURCE_HASH

__all__ = [
    "ClaimFailed",
    "ClaimLedger",
    "FreeEnergy",
    "Grid",
    "HegselmannKrause",
    "Kuramoto",
    "Model",
    "PiecewiseParabolic",
    "Potential",
    "cache",
    "claims",
    "clusters",
    "energy",
    "fastest_mode",
    "free_energy",
    "gamma_sharp",
    "growth_rates",
    "particle_interaction_energy",
    "particles",
    "pde",
    "predicted_cluster_count",
    "profiles",
    "rearrangement",
    "stability",
    "stationary",
    "uniform_free_energy",
    "validation",
]
