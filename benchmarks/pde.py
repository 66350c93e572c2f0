"""Benchmark: mvlib.pde against the method-of-lines solver a user would write.

Both solvers run the Hegselmann-Krause model (L = 1, ell = 0.1, beta = 1) on
the same grid of M = 512 cells, on two problems:

(a) two clusters centred at 0.25 and 0.75 with masses 0.45 and 0.55 at
    gamma = GAMMA_A, until the lighter one empties;
(b) the uniform state plus a fixed small perturbation at gamma = 800, until the
    first cluster empties.

"Empties" is decided for both solvers by the same stop condition,
``mvlib.pde.mass_below(grid, 1e-3)``, checked after every accepted step. The
baseline is the method of lines with first-order upwind drift, central
diffusion and the FFT convolution with mvlib's cell-averaged kernel, integrated
by scipy's BDF at rtol 1e-6 without a Jacobian (scipy then builds it by finite
differences). Each baseline run is capped at BASELINE_CAP_S seconds; a capped
run prints a note and its ratio is a lower bound.

The reference for the errors is mvlib's refined run: M doubled and the
tolerance ten times tighter. A last run at M = 1024 uses gamma = GAMMA_LONG,
where the lighter cluster empties near t = 1e5.

Run: ``.venv/bin/python benchmarks/pde.py``. Wall times depend on the machine
and on its load. The last line is the machine-readable summary.
"""

import math
import os
import sys
import time

# one core for both solvers: the baseline's dense LU would otherwise use
# several BLAS threads, which on a shared machine mostly adds contention
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402
from scipy.integrate import BDF  # noqa: E402

import mvlib  # noqa: E402
from mvlib import pde  # noqa: E402

L = 1.0
BETA = 1.0
ELL = 0.1
M = 512
STOP_MASS = 1e-3
MVLIB_RTOL = 1e-5
BASELINE_RTOL = 1e-6
# found by trial runs with mvlib: the lighter cluster empties near t = 36
GAMMA_A = 500.0
GAMMA_B = 800.0
# found by trial runs with mvlib: the lighter cluster empties near t = 1.1e5
GAMMA_LONG = 900.0
M_LONG = 1024
T_MAX = 1e7
BASELINE_CAP_S = 600.0


def two_clusters(grid, gamma, lighter=0.45):
    """Return Gaussian clusters at 0.25 and 0.75 with the variances ell/(beta gamma m)."""
    rho = np.zeros(grid.M)
    for centre, mass in ((0.25, lighter), (0.75, 1.0 - lighter)):
        sigma = math.sqrt(ELL / (BETA * gamma * mass))
        offset = grid.minimal_image(grid.x - centre)
        rho += mass * np.exp(-0.5 * (offset / sigma) ** 2) / sigma
    return grid.normalize(rho)


def perturbed_uniform(grid):
    """Return the uniform state plus a fixed sum of eight cosines of amplitude 1%."""
    rho = np.ones(grid.M)
    for k in range(1, 9):
        rho += 0.01 * np.cos(2 * np.pi * k * grid.x / grid.L + 0.7 * k * k)
    return grid.normalize(rho)


PROBLEMS = {
    "a": (GAMMA_A, two_clusters),
    "b": (GAMMA_B, lambda grid, gamma: perturbed_uniform(grid)),
}


def run_mvlib(gamma, initial, cells, rtol, t_final=T_MAX, t_eval=None):
    """Return (emptying time or nan, wall seconds, result) of an mvlib run."""
    model = mvlib.Model(mvlib.HegselmannKrause(gamma, ELL), L=L, beta=BETA)
    grid = mvlib.Grid(L, cells)
    stop = pde.mass_below(grid, STOP_MASS)
    result = pde.solve(model, grid, initial(grid, gamma), t_final, t_eval=t_eval, rtol=rtol, stop=stop, progress=False)
    emptied = result.t_stop if result.status == "stopped" else math.nan
    return emptied, result.wall_time, result


def upwind_right_hand_side(model, grid):
    """Return f(t, rho) of the upwind/central method of lines."""
    symbol = np.fft.rfft(grid.kernel(model.potential)) * grid.dx
    dx, diffusion, cells = grid.dx, 1.0 / model.beta, grid.M

    def rhs(t, rho):
        phi = np.fft.irfft(np.fft.rfft(rho) * symbol, n=cells)
        velocity = -(np.roll(phi, -1) - phi) / dx
        right = np.roll(rho, -1)
        flux = np.maximum(velocity, 0.0) * rho + np.minimum(velocity, 0.0) * right - diffusion * (right - rho) / dx
        return -(flux - np.roll(flux, 1)) / dx

    return rhs


def run_baseline(gamma, initial, cells=M, cap=BASELINE_CAP_S, t_final=T_MAX, record=None):
    """Return (emptying time or nan, wall seconds, capped, t reached, steps).

    ``record(t, rho)``, if given, is called after every step inside the timed
    loop, so it must be cheap.
    """
    model = mvlib.Model(mvlib.HegselmannKrause(gamma, ELL), L=L, beta=BETA)
    grid = mvlib.Grid(L, cells)
    stop = pde.mass_below(grid, STOP_MASS)
    solver = BDF(upwind_right_hand_side(model, grid), 0.0, initial(grid, gamma), t_final, rtol=BASELINE_RTOL)
    started = time.perf_counter()
    steps, capped, emptied = 0, False, math.nan
    while solver.status == "running":
        solver.step()
        steps += 1
        if record is not None:
            record(solver.t, solver.y)
        # BDF's upwind solution dips below zero by round-off (about -1e-23)
        # between clusters. The stop condition expects a density, so those
        # cells are read as zero, which changes none of the masses it measures.
        if stop(solver.t, np.maximum(solver.y, 0.0)):
            emptied = solver.t
            break
        if time.perf_counter() - started > cap:
            capped = True
            break
    return emptied, time.perf_counter() - started, capped, solver.t, steps


def relative_error(value, reference):
    return abs(value - reference) / reference if math.isfinite(value) else math.nan


def main():
    # compile the kernels outside the timings
    run_mvlib(GAMMA_A, two_clusters, 128, 1e-2)

    speedups, changes = {}, []
    for name, (gamma, initial) in PROBLEMS.items():
        print(f"problem ({name}): gamma = {gamma:g}, M = {M}", flush=True)
        emptied, wall, result = run_mvlib(gamma, initial, M, MVLIB_RTOL)
        print(f"  mvlib    rtol {MVLIB_RTOL:g}: empties at t = {emptied:.6g}, {wall:.2f} s, "
              f"{result.n_steps} steps ({result.n_rejected} rejected), status {result.status}", flush=True)
        refined, refined_wall, refined_result = run_mvlib(gamma, initial, 2 * M, MVLIB_RTOL / 10)
        print(f"  mvlib refined (M = {2 * M}, rtol {MVLIB_RTOL / 10:g}): empties at t = {refined:.6g}, "
              f"{refined_wall:.2f} s, {refined_result.n_steps} steps", flush=True)
        change = relative_error(emptied, refined)
        changes.append(change)
        print(f"  mvlib emptying time, relative change on refinement: {change:.3%}", flush=True)

        base_emptied, base_wall, capped, base_t, base_steps = run_baseline(gamma, initial)
        if capped:
            print(f"  NOTE: baseline capped after {base_wall:.0f} s at t = {base_t:.4g} ({base_steps} steps) "
                  f"without emptying; the ratio below is a lower bound", flush=True)
        else:
            print(f"  baseline BDF rtol {BASELINE_RTOL:g}: empties at t = {base_emptied:.6g}, "
                  f"{base_wall:.2f} s, {base_steps} steps", flush=True)
        print(f"  error of the emptying time against the refined run: mvlib {change:.3%}, "
              f"baseline {relative_error(base_emptied, refined):.3%}", flush=True)
        speedups[name] = base_wall / wall
        bound = ">=" if capped else "="
        print(f"  speed-up (baseline / mvlib wall time) {bound} {speedups[name]:.1f}", flush=True)

    emptied, long_wall, result = run_mvlib(GAMMA_LONG, two_clusters, M_LONG, MVLIB_RTOL)
    print(f"long run: gamma = {GAMMA_LONG:g}, M = {M_LONG}: empties at t = {emptied:.6g}, "
          f"{long_wall:.2f} s, {result.n_steps} steps, status {result.status}", flush=True)

    print(f"pde-benchmark speedup_a={speedups['a']:.2f} speedup_b={speedups['b']:.2f} "
          f"emptying_rel_change={max(changes):.4g} long_run_s={long_wall:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
