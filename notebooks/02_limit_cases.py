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
# # 2. Limit cases: α → ±1 and α → ±∞
#
# The α-family has four special points where the power-mean formula is replaced by a
# closed form: the arithmetic mixture at α = −1 (nothing special for the formula, but
# $Z = 1$), the geometric mixture at α = 1 ($\beta = 0$, where $a^\beta$ degenerates), and
# max/min at α = ∓∞. A reference implementation must be *continuous through them*: the value
# at α = 1 + 10⁻¹² must be within 10⁻¹² of the value at α = 1, not a different formula
# with different rounding.
#
# `amid_ref.analysis.limit_convergence` measures
#
# $$
# e(\alpha) = \max_x \big|\log r^{(\alpha,\lambda)}(x) - \log r^{(\alpha^*,\lambda)}(x)\big|
# $$
#
# for α approaching each limit α* (from both sides for ±1), and fits the slope of
# $\log e$ against $\log|\alpha - \alpha^*|$ (or $\log 1/|\alpha|$ at ±∞).

# %%
# %matplotlib inline
import numpy as np

import amid_ref
from amid_ref import analysis, plotting

series = analysis.limit_convergence()
for s in series:
    order = f"{s.order:6.3f}" if np.isfinite(s.order) else "   –  "
    print(f"{s.label:32s} order {order}  {'PASS' if s.passed else 'FAIL'}  {s.note}")

# %%
plotting.convergence_figure(series)

# %% [markdown]
# ## α → ±1: first order
#
# The mixture is an analytic function of α at ±1, so the error is linear in the distance
# (order 1.000 from both sides) and reaches 10⁻¹¹ at distance 10⁻¹⁰ — there is no plateau
# of rounding error. That is what the `log1p`/`expm1` form of the log-domain mean buys: the
# textbook $\frac1\beta\,\mathrm{logaddexp}(\log\lambda + \beta\log a,\ \log(1-\lambda) +
# \beta \log b)$ loses $\log_{10}(1/|\beta|)$ digits there (notebook 4 shows it).
#
# ## α → ±∞: order 1, or exponential
#
# Here the observed behaviour depends on λ, and the reason is visible in the formula.
# For large $|\beta|$, with $a$ the larger argument (α → −∞),
#
# $$
# m_\alpha(a, b; \lambda) = a\,\lambda^{1/\beta}\,\Big(1 + \tfrac{1-\lambda}{\lambda}
# (b/a)^{\beta}\Big)^{1/\beta}.
# $$
#
# * For λ ≠ ½ the factor $\lambda^{1/\beta}$ or $(1-\lambda)^{1/\beta}$ differs between
#   tokens (it depends on which of $p(x), q(x)$ is larger), does not cancel in the
#   normalization, and the error is $O(1/|\alpha|)$: **order 1**.
# * For λ = ½ the factor is the same for every token and cancels in $r$. What is left decays
#   like $(b/a)^{|\beta|}/|\beta|$: **exponentially** in |α|, with rate
#   $\kappa = \min_x |\log p(x) - \log q(x)|$ per unit of $|\beta|$. The fit agrees:

# %%
for s in series:
    if not np.isfinite(s.limit_alpha) and s.lam == 0.5:
        print(
            f"{s.label}: fitted κ = {s.decay_rate:.4f}, predicted κ = {s.expected_decay_rate:.4f}"
        )

# %% [markdown]
# ## Continuity at the special points, directly
#
# The largest change of $\log r$ at distance 10⁻¹² from each special point: of order
# 10⁻¹³, as for a function with a bounded derivative, and far below the tolerance of the
# table (10⁻¹² relative). At α = 10¹⁵ the min-mixture is reached to rounding.

# %%
lp = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
lq = np.log(np.array([0.1, 0.2, 0.3, 0.4]))
for centre in (-1.0, 1.0):
    at = amid_ref.log_alpha_mixture(lp, lq, centre, 0.3)
    for delta in (-1e-12, 1e-12):
        near = amid_ref.log_alpha_mixture(lp, lq, centre + delta, 0.3)
        print(f"α = {centre:+.0f} {delta:+.0e}: max |Δ log r| = {np.max(np.abs(near - at)):.2e}")
at_inf = amid_ref.log_alpha_mixture(lp, lq, np.inf, 0.3)
near_inf = amid_ref.log_alpha_mixture(lp, lq, 1e15, 0.3)
print(f"α = 1e15 vs +inf:  max |Δ log r| = {np.max(np.abs(near_inf - at_inf)):.2e}")
