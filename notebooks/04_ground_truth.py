# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. Using amid-ref as ground truth for your own implementation
#
# `amid_ref` is meant to be the thing your training code is compared against: float64,
# accurate to a few ulps uniformly in α and λ, itself checked against a 50-digit mpmath
# oracle (`amid_ref.precise`) by `amid-ref verify`. This notebook holds a *deliberately
# naive* implementation to it and shows where it breaks.
#
# The naive implementation is the textbook log-domain formula
#
# $$
# \log m_\alpha = \frac{1}{\beta}\,
# \mathrm{logaddexp}\big(\log\lambda + \beta \log p,\ \log(1-\lambda) + \beta\log q\big),
# \qquad \beta = \frac{1-\alpha}{2},
# $$
#
# which is exact in real arithmetic and has no overflow. It is also what one writes first.

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
from scipy.special import logsumexp

import amid_ref
from amid_ref import precise
from amid_ref._battery._known_wrong import naive_log_alpha_mean
from amid_ref.tolerances import assert_within, tolerance


# %% tags=["user-code"]
# The implementation under test ("your code"): the textbook formula above, which amid-ref
# keeps as a known-wrong formula (amid_ref._battery._known_wrong) and never computes with.
def naive_log_alpha_mixture(log_p, log_q, alpha, lam):
    log_m = naive_log_alpha_mean(log_p, log_q, alpha, lam)
    return log_m - logsumexp(log_m)


# %% [markdown]
# ## Compare with the reference, with the project's tolerance
#
# The bound is the one the library itself is held to, from the one tolerance table:

# %%
tol = tolerance("reference", "log_mixture", "float64")
print(f"rtol = {tol.rtol:g}, atol = {tol.atol:g}, scaled by max(1, |log r|)")
print(tol.reason)

# %%
rng = np.random.default_rng(0)
log_p = rng.standard_normal(8)
log_p -= logsumexp(log_p)
log_q = rng.standard_normal(8)
log_q -= logsumexp(log_q)
lam = 0.3

distances = np.logspace(-13, -1, 25)
errors = []
for h in distances:
    ours = naive_log_alpha_mixture(log_p, log_q, 1.0 - h, lam)
    reference = amid_ref.log_alpha_mixture(log_p, log_q, 1.0 - h, lam)
    errors.append(np.max(np.abs(ours - reference) / np.maximum(1.0, np.abs(reference))))
errors = np.array(errors)
bound = tol.rtol
print(f"naive implementation within tolerance for {np.mean(errors <= bound):.0%} of the α values")
print(f"worst relative error {errors.max():.1e} at α = 1 − {distances[np.argmax(errors)]:.0e}")

# %%
fig, ax = plt.subplots(figsize=(7.5, 4.5))
ax.loglog(distances, errors, "o-", label="naive logaddexp/β vs amid_ref")
ax.loglog(distances, 2.2e-16 / distances, "k:", label="eps / |α − 1|")
ax.axhline(bound, color="r", ls="--", label=f"tolerance (rtol = {bound:g})")
ax.set_xlabel("|α − 1|")
ax.set_ylabel("max relative error of log r")
ax.set_title("A naive α-mixture loses log10(1/|β|) digits near α = 1")
ax.legend()
plt.show()

# %% [markdown]
# The error grows like $\varepsilon/|\alpha - 1|$: the bracket tends to 0 and is divided by
# β, so every rounding error of the bracket is amplified by $1/\beta$. At α = 1 − 10⁻¹² only
# about four digits are right. `amid_ref` rewrites the bracket with `log1p`/`expm1`
# (see `amid_ref._mixture`), and it is not taking its own word for it — the same comparison
# against the mpmath oracle:

# %%
for h in (1e-4, 1e-8, 1e-12):
    reference = amid_ref.log_alpha_mixture(log_p, log_q, 1.0 - h, lam)
    oracle = precise.to_float(precise.log_alpha_mixture(log_p, log_q, 1.0 - h, lam, dps=50))
    naive = naive_log_alpha_mixture(log_p, log_q, 1.0 - h, lam)
    print(
        f"α = 1 − {h:.0e}:  |amid_ref − mpmath| = {np.max(np.abs(reference - oracle)):.1e},"
        f"  |naive − mpmath| = {np.max(np.abs(naive - oracle)):.1e}"
    )

# %% [markdown]
# ## In a test suite
#
# `assert_within` is the assertion the project's own tests use; on failure it names the
# worst entry, the error and the bound:

# %%
try:
    assert_within(
        naive_log_alpha_mixture(log_p, log_q, 1.0 - 1e-10, lam),
        amid_ref.log_alpha_mixture(log_p, log_q, 1.0 - 1e-10, lam),
        tol,
        what="naive log α-mixture at α = 1 − 1e-10",
    )
except AssertionError as exc:
    print("AssertionError:", exc)

# %% [markdown]
# At exactly α = 1 the naive formula divides by zero, and at α = ±∞ it produces NaN — the
# limits have to be special-cased, which is where the next bugs usually hide (a geometric
# mixture for *every* α ≥ 1, a max where a min was meant, λ applied to the student…).
#
# ## Beyond one function: the conformance battery
#
# Checking one function at one grid is the start. `amid_ref.conformance` runs a whole
# battery against a loss or a mixture you point it to — α grids including ±∞ and 1 ± 10⁻⁶,
# λ at and near 0 and 1, extreme and −∞ logits, one-hot teachers, vocabularies up to 151936,
# bf16/fp16-rounded inputs, every divergence and order, temperature and ignore-index masks —
# with the tolerance of the table for your dtype, and it diagnoses failures against a list
# of known-wrong formulas:
#
# ```bash
# amid-ref conform my_pkg.losses:amid_loss --kind loss
# ```
#
# or, inside pytest, `amid_ref.conformance.assert_conforms(...)`. The documentation page
# *Check your implementation* (`docs/conformance.md`) has the details.
