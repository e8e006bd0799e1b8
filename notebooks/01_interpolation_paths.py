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
# # 1. Interpolation paths: what α does to the assistant
#
# AMiD distills through an *assistant* distribution that interpolates between the teacher
# $p$ and the student $q$:
#
# $$
# r^{(\alpha,\lambda)}(x) = \frac{m_\alpha\big(p(x), q(x); \lambda\big)}{Z_\alpha},
# $$
#
# $$
# m_\alpha(a, b; \lambda) = \Big(\lambda a^{\beta} + (1-\lambda)\, b^{\beta}\Big)^{1/\beta},
# \qquad \beta = \frac{1-\alpha}{2},
# $$
#
# with the geometric mean $a^\lambda b^{1-\lambda}$ at $\alpha = 1$ and $\max$/$\min$ at
# $\alpha = \mp\infty$. The weight $\lambda \in [0, 1]$ is the teacher's: $\lambda = 1$
# gives $p$, $\lambda = 0$ gives $q$. For a fixed $\lambda$, α chooses *which path* leads
# from $q$ to $p$.
#
# Everything below is computed by `amid_ref`; this notebook only looks at the numbers.

# %%
# %matplotlib inline
import numpy as np

import amid_ref
from amid_ref import plotting

np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## Special means
#
# For two numbers $a = 0.6$, $b = 0.1$ at $\lambda = ½$ the α-mean runs, as α grows, from
# the maximum through the quadratic (α = −3), arithmetic (−1), geometric (1) and harmonic (3)
# means down to the minimum: it is non-increasing in α (power-mean inequality).

# %%
alphas = [-np.inf, -3.0, -1.0, 0.0, 1.0, 3.0, np.inf]
for alpha in alphas:
    print(f"α = {alpha:>5}:  m_α(0.6, 0.1; ½) = {amid_ref.alpha_mean(0.6, 0.1, alpha, 0.5):.6f}")

# %% [markdown]
# ## Paths on the simplex
#
# With three tokens a distribution is a point of the triangle. Each curve is
# $\lambda \mapsto r^{(\alpha,\lambda)}$ for one α, from the student (λ = 0, diamond) to the
# teacher (λ = 1, square). At α = ±∞ the mixture does not depend on λ inside (0, 1): it is
# the normalized max (−∞) or min (+∞) of $p$ and $q$, a single point, and the path jumps to
# the endpoints only at λ ∈ {0, 1}.

# %%
plotting.paths_figure()

# %% [markdown]
# Small α (β > 0) bends the path towards tokens where *either* distribution is large; large
# α (β < 0) towards tokens where *both* are large. The α = −1 path is the straight segment
# (the arithmetic mixture used by DistiLLM and GKD), α = 1 the geometric path used by TAID.
#
# ## The mixture over a vocabulary
#
# The same effect on six tokens at λ = ½: for α < 1 the assistant spreads mass over the
# union of what $p$ and $q$ consider likely; for α > 1 it concentrates on their agreement.

# %%
plotting.mixture_bars_figure()

# %% [markdown]
# ## The normalizer
#
# $Z_\alpha = \sum_x m_\alpha(p(x), q(x); \lambda)$ is exactly 1 on the arithmetic path
# (α = −1) and at the endpoints; it is above 1 for α < −1 and below 1 for α > −1.

# %%
plotting.normalizer_figure()

# %%
p = np.array([0.5, 0.3, 0.2])
q = np.array([0.2, 0.2, 0.6])
for alpha in alphas:
    z = amid_ref.alpha_mixture_normalizer(p, q, alpha, 0.3)
    print(f"α = {alpha:>5}: Z = {z:.6f}")

# %% [markdown]
# ## Support
#
# For α < 1 the mixture lives on the *union* of the supports, for α ≥ 1 on their
# *intersection* (a zero in either argument makes $m_\alpha$ zero). Masked tokens show it:
# token 2 is impossible for the teacher, token 3 for the student.

# %%
p = np.array([0.5, 0.3, 0.0, 0.2])
q = np.array([0.4, 0.0, 0.3, 0.3])
for alpha in (-3.0, 0.0, 0.9, 0.99, 1.0, 3.0):
    r = amid_ref.alpha_mixture(p, q, alpha, 0.5)
    print(f"α = {alpha:>5}: r = [" + ", ".join(f"{x:.3g}" for x in r) + "]")

# %% [markdown]
# For α < 1 a token that only one side supports keeps the mass
# $m_\alpha(a, 0; \lambda) = \lambda^{1/\beta} a$: about 10⁻⁶·a at α = 0.9 and 10⁻⁶⁰·a
# at α = 0.99, which vanishes as α → 1 faster than any power of 1 − α. At α = 1 it is
# exactly zero: the support changes at α = 1 while the mixture stays continuous. When the
# supports are disjoint and α ≥ 1, $Z = 0$ and the mixture is undefined; `amid_ref` raises
# a `ValueError` that says so.

# %%
try:
    amid_ref.alpha_mixture(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 1.0, 0.5)
except ValueError as exc:
    print("ValueError:", exc)
