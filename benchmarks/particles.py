"""Particle-steps per second of mvlib's simulator, against all-pairs numpy and a bare loop.

Run: ``.venv/bin/python benchmarks/particles.py``. Prints, for the
Hegselmann–Krause system (ell = 0.1, gamma = 2 gamma_sharp, beta = 1, L = 1,
dt = 1e-5, uniform start):

* mvlib's particle-steps per second at N = 10^3 .. 10^6 (one core);
* the same for the all-pairs numpy step a user would write (N x N
  minimal-image differences) at N = 10^3 and 4*10^3, and the speed-up at 4*10^3;
* the ceiling: a loop that only draws one normal number per particle and moves
  it, with the draws from numpy's Generator into a buffer and from numba's
  scalar generator; the faster of the two is kept;
* the peak resident memory of a run with N = 10^7, measured in a fresh
  subprocess (``VmHWM`` of ``/proc/self/status`` on Linux, else
  ``resource.getrusage``). It includes the interpreter, numpy and numba,
  reported separately as the baseline.

The last line is a machine-readable summary. Timings are wall-clock times of
one process; on a shared machine they vary from run to run.
"""

import argparse
import math
import resource
import subprocess
import sys
import time

import numba
import numpy as np

import mvlib
from mvlib import particles
from mvlib._jit import jit

ELL = 0.1
GAMMA_OVER_SHARP = 2.0
DT = 1e-5
SEED = 20251017
# particle-steps per timed run, an estimate of one to ten seconds per size
WORK_PER_RUN = 2 * 10**7
MVLIB_SIZES = [10**3, 10**4, 10**5, 10**6]
ALL_PAIRS_SIZES = [10**3, 4 * 10**3]
ALL_PAIRS_PAIRS = 2 * 10**8  # pair evaluations per timed all-pairs run (N**2 per step)
MEMORY_SIZE = 10**7
MEMORY_STEPS = 3


def benchmark_model():
    unit = mvlib.Model(mvlib.HegselmannKrause(1.0, ELL), L=1.0, beta=1.0)
    return unit.with_gamma(GAMMA_OVER_SHARP * mvlib.gamma_sharp(unit))


def mvlib_rate(model, n):
    """Return particle-steps per second of ``particles.simulate`` at N = n."""
    x0 = particles.uniform_positions(model, n, SEED)
    steps = max(5, WORK_PER_RUN // n)
    result = particles.simulate(model, x0, steps * DT, DT, seed=SEED, progress=False)
    return n * result.n_steps / result.wall_time


def all_pairs_rate(model, n):
    """Return particle-steps per second of the vectorised all-pairs numpy step."""
    L, gamma, ell = model.L, model.potential.gamma, model.potential.ell
    generator = np.random.default_rng(SEED)
    x = generator.uniform(0.0, L, n)
    scale = math.sqrt(2.0 * DT / model.beta)
    steps = max(3, ALL_PAIRS_PAIRS // (n * n))
    start = time.perf_counter()
    for _ in range(steps):
        difference = x[:, None] - x[None, :]
        difference -= L * np.rint(difference / L)
        force = np.where(np.abs(difference) <= ell, gamma * difference / ell, 0.0).sum(axis=1) / n
        x = (x - DT * force + scale * generator.standard_normal(n)) % L
    return n * steps / (time.perf_counter() - start)


@jit
def _move(x, noise, scale, L):
    for i in range(x.size):
        value = x[i] + scale * noise[i]
        if value < 0.0 or value >= L:
            value -= L * math.floor(value / L)
        x[i] = value


@jit
def _move_scalar_draws(x, steps, scale, L):
    for _ in range(steps):
        for i in range(x.size):
            value = x[i] + scale * np.random.standard_normal()
            if value < 0.0 or value >= L:
                value -= L * math.floor(value / L)
            x[i] = value


@jit
def _seed_numba(seed):
    np.random.seed(seed)


def ceiling_rates(n):
    """Return particle-steps per second of the bare loop: numpy buffer draws, numba scalar draws."""
    scale = math.sqrt(2.0 * DT)
    steps = max(5, WORK_PER_RUN // n)
    generator = np.random.default_rng(SEED)
    x = generator.uniform(0.0, 1.0, n)
    noise = np.empty(n)
    _move(x, noise * 0.0, scale, 1.0)
    start = time.perf_counter()
    for _ in range(steps):
        generator.standard_normal(out=noise)
        _move(x, noise, scale, 1.0)
    buffered = n * steps / (time.perf_counter() - start)

    _seed_numba(SEED)
    _move_scalar_draws(x, 1, scale, 1.0)
    start = time.perf_counter()
    _move_scalar_draws(x, steps, scale, 1.0)
    scalar = n * steps / (time.perf_counter() - start)
    return buffered, scalar


def peak_memory_child(n, simulate):
    """Print the peak resident memory in MB of this process after an optional N = n run."""
    if simulate:
        model = benchmark_model()
        x0 = particles.uniform_positions(model, n, SEED)
        particles.simulate(model, x0, MEMORY_STEPS * DT, DT, seed=SEED, progress=False)
    print(peak_resident_mb())


def peak_resident_mb():
    """Return this process's peak resident memory in MB.

    ``VmHWM`` starts afresh at exec, whereas ``ru_maxrss`` of a child keeps the
    resident size of the parent it was forked from, so VmHWM is preferred.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    # ru_maxrss is in kilobytes on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure_peak_memory(n, simulate):
    command = [sys.executable, __file__, "--peak-memory-child", str(n)]
    if not simulate:
        command.append("--baseline")
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return float(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peak-memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.peak_memory_child:
        peak_memory_child(arguments.peak_memory_child, not arguments.baseline)
        return

    # memory first, while this process is still small
    baseline = measure_peak_memory(MEMORY_SIZE, simulate=False)
    peak = measure_peak_memory(MEMORY_SIZE, simulate=True)

    numba.set_num_threads(1)
    model = benchmark_model()
    print(f"Hegselmann-Krause, ell = {ELL}, gamma = {model.gamma:.4g} (= {GAMMA_OVER_SHARP} gamma_sharp), "
          f"beta = 1, L = 1, dt = {DT}")

    # compile (or load from numba's cache) before timing
    particles.simulate(model, particles.uniform_positions(model, 100, SEED), 2 * DT, DT, seed=SEED, progress=False)

    rates = {}
    for n in MVLIB_SIZES:
        rates[n] = mvlib_rate(model, n)
        print(f"mvlib      N = {n:>8d}: {rates[n]:.3e} particle-steps/s")
    pairs = {}
    for n in ALL_PAIRS_SIZES:
        pairs[n] = all_pairs_rate(model, n)
        print(f"all-pairs  N = {n:>8d}: {pairs[n]:.3e} particle-steps/s")
    rate_4000 = mvlib_rate(model, 4000)
    print(f"mvlib      N =     4000: {rate_4000:.3e} particle-steps/s")
    speedup = rate_4000 / pairs[4000]
    print(f"speed-up over all-pairs at N = 4000: {speedup:.1f}")

    buffered, scalar = ceiling_rates(10**6)
    ceiling = max(buffered, scalar)
    print(f"ceiling    N =  1000000: {buffered:.3e} (numpy Generator buffer), {scalar:.3e} (numba scalar draws)")
    ratio = ceiling / rates[10**6]
    print(f"ceiling over mvlib at N = 10^6: {ratio:.2f}")

    print(f"peak memory N = {MEMORY_SIZE}: {peak:.0f} MB (interpreter, numpy, numba and mvlib alone: {baseline:.0f} MB)")

    print(f"particles-benchmark speedup_4000={speedup:.4g} steps_per_s_1e6={rates[10**6]:.4g} "
          f"ceiling_ratio={ratio:.4g} peak_mb_1e7={peak:.0f}")


if __name__ == "__main__":
    main()
