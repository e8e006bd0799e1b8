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
# # 3. Optimality, mode covering and mode seeking
#
# Two claims of the paper are tested here.
#
# * **Theorem 3.4 (optimality).** For λ ∈ (0, 1), $r^{(\alpha,\lambda)} = p$ iff $q = p$, so
#   minimizing $D(p\,\|\,r)$ or $D(q\,\|\,r)$ over the student still leads to the teacher.
# * **Proposition 3.5 and its reading.** The gradient of the loss weights token $x$ by
#   $w(x) = \frac{(1-\lambda) q^\beta}{\lambda p^\beta + (1-\lambda) q^\beta}$; larger α
#   puts more weight where the student underestimates the teacher ($p > q$), which the paper
#   reads as *larger α is more mode-covering*.
#
# The student below cannot represent the teacher: the teacher is bimodal over a 1-D
# vocabulary of 56 tokens, the student a discretized Gaussian with a learnable mean and
# log-std. Its best fit must choose between covering both modes and seeking one, and which it
# chooses depends on the loss.

# %%
# %matplotlib inline
import numpy as np

import amid_ref
from amid_ref import analysis, plotting

# %% [markdown]
# ## Optimality first
#
# When the student *can* represent the teacher, the minimizer is the teacher. The loss along
# a line of student logits through $q = p$ vanishes at $t = 0$ only — with one caveat the
# right panel shows: for α ≥ 1 and the orders that compare $r$ with the student (`qr`,
# `rq`), the loss *also* tends to 0 as the student collapses onto a subset of the tokens,
# because the α ≥ 1 mixture lives on the intersection of the supports. `amid-ref verify`
# finds these boundary infima by direct minimization and checks that a restart near $p$
# still converges to $p$.

# %%
plotting.landscape_figure()

# %% [markdown]
# ## The gradient weight

# %%
plotting.weight_figure()

# %% [markdown]
# ## A unimodal student for a bimodal teacher
#
# Teacher: modes at tokens 14 and 42 with weights 0.65 and 0.35. The student
# $q_{\mu,\sigma}(x) \propto \exp(-(x-\mu)^2 / 2\sigma^2)$ is fitted by L-BFGS over
# $(\mu, \log\sigma)$ minimizing the AMiD loss (gradient from `amid_ref.amid_grad`), from six
# starting points, keeping the best. First the paper's main form, $D_{KL}(p\,\|\,r)$ with
# λ = 0.1:

# %%
alphas = (-5.0, -3.0, -1.0, 0.0, 1.0, 3.0, 5.0)
fits_pr = analysis.mode_covering_study(alphas, lam=0.1, divergence="kl", order="pr")


# %% tags=["display-helper"]
def show(fits):
    print("   α      μ      σ   mass on mode 1 / mode 2   KL(p‖q)  KL(q‖p)")
    for f in fits:
        masses = " / ".join(f"{m:.3f}" for m in f.mode_mass)
        print(
            f"{f.alpha:5g} {f.mean:6.2f} {f.std:6.2f}   {masses:>22s}   "
            f"{f.forward_kl:7.3f}  {f.reverse_kl:7.3f}"
        )


# %%
show(fits_pr)

# %%
plotting.modes_figure(fits_pr)

# %% [markdown]
# **What we find for $D_{KL}(p\,\|\,r)$:** the claim holds as a *switch*: α ≤ −1 settles on
# the major mode (σ equal to that mode's width, no mass on the minor mode, KL(p‖q) ≈ 21),
# every α ≥ 0 covers both modes with a wide Gaussian (KL(p‖q) ≈ 0.86). Beyond the switch it
# is *not* monotone: the mass on the minor mode is largest at α = 0 and slightly smaller for
# α = 3, 5. The numbers, checked rather than eyeballed:

# %%
minor = [f.mode_mass[1] for f in fits_pr]
switch = [f.alpha for f in fits_pr if f.covered == (True, True)]
monotone = bool(np.all(np.diff(minor) >= -1e-9))
print("covers both modes for α in", switch)
print("minor-mode mass non-decreasing in α:", monotone)
# the text above is held to the numbers: executing the notebook fails if they change
assert switch == [0.0, 1.0, 3.0, 5.0] and not monotone

# %% [markdown]
# ## The order matters: $D_{KL}(q\,\|\,r)$
#
# The same experiment with the student in the first argument (order `qr`, the form used by
# DistiLLM's skew reverse KL) reverses the trend: now small α covers and large α seeks.

# %%
fits_qr = analysis.mode_covering_study((-5.0, -1.0, 0.0, 1.0, 5.0), lam=0.1, order="qr")
show(fits_qr)
covering_qr = [f.alpha for f in fits_qr if f.covered == (True, True)]
print("covers both modes for α in", covering_qr)
assert covering_qr == [-5.0, -1.0]

# %% [markdown]
# For α ≥ 1 the fitted student is the teacher's major mode *alone* and the loss is ≈ 1e-8:
# the boundary infimum of the optimality section. The intersection-support mixture of a
# student that ignores the minor mode equals the student, so $D(q\,\|\,r) \approx 0$
# without covering anything.
#
# **Conclusion.** The paper's "larger α is more mode-covering" is borne out for its main
# objective $D(p\,\|\,r)$, as a transition between α = −1 and α = 0 on this problem rather
# than a gradual trend, and it is reversed when the student is the first argument of the
# divergence. The weight $w(x)$ of Proposition 3.5 alone does not decide the behaviour; the
# order of the arguments and the support of $r$ do.

# %%
print("loss of the α = 5 qr fit:", f"{fits_qr[-1].loss:.2e}")
print("same student, order pr: ", end="")
student_logits = fits_qr[-1].student_log_probs
teacher_logits = analysis.bimodal_teacher_logits(analysis.MODE_GRID)
print(f"{float(amid_ref.amid_loss(student_logits, teacher_logits, 5.0, 0.1, 'kl', 'pr')):.3f}")
