"""The one tolerance table of the project.

Every comparison in the test suite, the ``verify`` report and the conformance battery looks
its tolerance up here, so that a widening is visible in one place with its reason.

Each entry is keyed by ``(suite, quantity, dtype)``:

* ``suite`` -- ``"reference"`` (``amid_ref`` float64 against the mpmath oracle
  ``amid_ref.precise``) or ``"gpu"`` (``gpu`` torch code against ``amid_ref`` float64);
  ``"vocab_parallel"``: ``gpu.vocab_parallel_amid_loss`` against ``gpu.amid_loss`` on the
  full rows; ``"fused"``: ``gpu.amid_fused_linear_loss`` against ``F.linear`` +
  ``gpu.amid_loss``.
* ``quantity`` -- ``"log_mixture"``, ``"mixture"``, ``"divergence"``, ``"loss"``, ``"grad"``.
* ``dtype`` -- the input dtype name (``"float64"``, ``"float32"``, ``"bfloat16"``, ``"float16"``).

The check performed with an entry is
``|got - want| <= atol + rtol * scale`` where ``scale`` is ``|want|`` except for the
log-domain mixture entries, whose scale is ``max(1, |want|)`` (``log_scaled=True``): an
error of 1e-12 in ``log r`` is a relative error of 1e-12 in ``r``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "SPARSE_CONDITIONING_BELOW",
    "SPARSE_LOGPROB_ROUNDING_ULPS",
    "SPARSE_MASS_TOL",
    "TOLERANCES",
    "VOCAB_TRUNCATE_MAX_DROPPED",
    "Tolerance",
    "assert_within",
    "indicator_ties",
    "tolerance",
]

#: How far above 1 the probabilities of a sparse teacher's k ids may sum (P_S ≤ 1 + this)
#: before they are refused: log-probabilities served in float32 (vLLM, SGLang) carry a
#: relative error of ~6e-8 each after their own log-softmax, and a top-k that holds nearly
#: all the mass then sums to 1 + O(k·6e-8); 1e-4 leaves room for k up to ~1000 while a
#: genuinely wrong input (probabilities instead of log-probabilities, an unnormalized row)
#: exceeds it by orders of magnitude. Within it the row's mass is rounding: the
#: log-probabilities are renormalized to sum to 1 and ε = 0 (likewise for a row that keeps
#: every id, k = V, with ε ≤ this).
SPARSE_MASS_TOL: float = 1e-4

#: The largest probability ``vocab_alignment="truncate"`` may drop (the teacher's or the
#: student's mass on the ids beyond the shared ones) before refusing: padded ids of a
#: trained model carry ~e^-20 or less; 1e-4 refuses a genuine vocabulary mismatch (real
#: tokens cut off) while accepting padding. Below it the kept ids are renormalized.
VOCAB_TRUNCATE_MAX_DROPPED: float = 1e-4

#: Below this leftover mass ε a sparse teacher's loss is compared with the oracle with an
#: extra allowance for the rounding of its inputs: float64 log-probabilities fix
#: ε = 1 − Σ_S e^ℓ only to ~k ulps of 1 (a float64 log-sum-exp is off by a few ulps), a
#: relative error of k·2⁻⁵³/ε in ε that no float64 evaluation avoids. Above 1e-6 that
#: relative error is below 1e-8 and the loss rows apply unchanged.
SPARSE_CONDITIONING_BELOW: float = 1e-6

#: The input perturbation (in units of 2⁻⁵³, per kept id) by which the oracle measures that
#: allowance: the oracle's own change when every ℓ moves by ±SPARSE_LOGPROB_ROUNDING_ULPS·k·2⁻⁵³
#: (the conditioning of the loss in ε, measured by mpmath rather than by the code under
#: test). 8 covers the few ulps of a log-sum-exp and of its complement, with a margin of 2.
SPARSE_LOGPROB_ROUNDING_ULPS: int = 8


@dataclass(frozen=True)
class Tolerance:
    """An error bound ``atol + rtol * scale`` with the reason it is what it is."""

    rtol: float
    atol: float
    reason: str
    log_scaled: bool = False


TOLERANCES: dict[tuple[str, str, str], Tolerance] = {
    # --- amid_ref (float64) against amid_ref.precise (mpmath, 50 digits) -----------------
    ("reference", "log_mixture", "float64"): Tolerance(
        rtol=1e-12,
        atol=0.0,
        log_scaled=True,
        reason="Issue contract. log m is a few float64 operations on log p, log q; the "
        "expm1/log1p branch keeps the error O(eps) uniformly in alpha (the naive "
        "logaddexp/beta form loses ~eps/|beta| near alpha=1). Scaled by max(1,|log r|) "
        "because log p itself carries eps*|log p| representation error.",
    ),
    ("reference", "mixture", "float64"): Tolerance(
        rtol=1e-12,
        atol=0.0,
        log_scaled=True,
        reason="r = exp(log r): a relative error in r equals the absolute error in log r, so "
        "the log-domain bound carries over; applied to entries above 1e-300 (below, "
        "subnormal rounding dominates).",
    ),
    ("reference", "divergence", "float64"): Tolerance(
        rtol=1e-10,
        atol=1e-13,
        reason="Issue contract. Sums of V terms of mixed sign: pairwise summation error "
        "grows like eps*log2(V)*sum|terms|; near a divergence's zero the absolute floor "
        "dominates.",
    ),
    ("reference", "loss", "float64"): Tolerance(
        rtol=1e-10,
        atol=1e-13,
        reason="Same as divergence: the loss is a divergence of log-softmax outputs and "
        "the mixture, each accurate to O(eps).",
    ),
    ("reference", "grad", "float64"): Tolerance(
        rtol=1e-8,
        atol=1e-12,
        reason="Compared with mpmath finite differences of precise.amid_loss (step 1e-15 "
        "at 50 digits, truncation error ~1e-30); the analytic gradient carries O(eps) "
        "relative error per entry but entries near 0 are differences of O(1) terms, "
        "hence the absolute floor.",
    ),
    # --- gpu (torch) against amid_ref (float64) -------------------------------------------
    # Values as first set; reasons updated with what tests/test_gpu.py
    # measured (largest error / bound over the whole grid and the real vocabularies). The
    # gradient rows' atol is applied by tests/test_gpu.py as atol*max(1, max_j |g_row,j|):
    # each entry is a difference g_j - q_j*sum_x(g_x) whose rounding is a few ulps of the
    # row's largest terms (it matters only for chi2, whose gradients reach 1e4).
    ("gpu", "loss", "float64"): Tolerance(
        rtol=1e-10,
        atol=1e-12,
        reason="Same float64 arithmetic as the reference up to the order of operations "
        "(chunked, torch reductions). Observed: at most 0.003 of the bound.",
    ),
    ("gpu", "grad", "float64"): Tolerance(
        rtol=1e-9,
        atol=1e-12,
        reason="Closed-form gradient in float64 (same chain rule, independently coded); "
        "differences come from the order of operations. Observed: at most 0.005 of "
        "the (row-scaled) bound.",
    ),
    ("gpu", "loss", "float32"): Tolerance(
        rtol=2e-4,
        atol=2e-5,
        reason="fp32 arithmetic (eps 6e-8) over V up to 151936 terms: summation error "
        "~eps*sqrt(V)*sum|terms| plus the log-domain mixture's eps*|log p| with log p "
        "down to -1e2 for realistic logits. Observed: at most 0.42 of the bound (renyi "
        "rho=2 on logits spanning +-40). Not widened, unlike the grad row, for rows whose "
        "logits span L far beyond that: a float32 log-probability of size L is held to "
        "eps*L only, and fuzzed rows of logits +-1e4 (log p near -2e4 where the other side "
        "is near 0) came 1-10x this bound off amid_ref.",
    ),
    ("gpu", "grad", "float32"): Tolerance(
        rtol=1e-3,
        atol=1e-6,
        reason="Per-entry gradients are differences such as q_j*sum(g) - g_j computed in "
        "fp32; entries of size 1e-6 relative to the row carry absolute error ~1e-7. "
        "Observed: at most 0.83 of the (row-scaled) bound, for chi2(r||p) on a row whose "
        "logits span +-40 (log-probs near -80 carry fp32 absolute error 1e-5, and the "
        "entry depends on expm1 of their small difference); 0.1 elsewhere. At alpha = "
        "+-inf the weight w is an indicator that jumps at p = q: entries tied within "
        "fp32 rounding may take the other side (the tests exclude |log q - log p| <= "
        "8 eps(1 + |log p|)). A float32 log-probability of size L is itself held only "
        "to eps*L (x - max x of logits +-1e4 needs 25 bits), so a row whose logits span "
        "L = max|x - max x|/T takes rtol max(1e-3, 2 eps L) (tests/test_gpu.py, "
        "assert_grad_within; it binds from L = 4200 on): renyi(2) D(r||q) on a row of "
        "logits +-1e4 weights its terms by e^(2 log r - log q) with log q near -2e4, "
        "and was off by 1.5e-3 relative, the same in the torch and the Triton kernel.",
    ),
    ("gpu", "loss", "bfloat16"): Tolerance(
        rtol=2e-4,
        atol=2e-5,
        reason="Inputs are rounded to bf16, but the reference is evaluated on the same "
        "rounded logits and the arithmetic is fp32, so the loss error is fp32-level. "
        "Observed: at most 0.27 of the bound.",
    ),
    ("gpu", "grad", "bfloat16"): Tolerance(
        rtol=2e-2,
        atol=1e-4,
        reason="The gradient is returned in the student dtype: bf16 keeps 8 significant "
        "bits (relative rounding 3.9e-3), plus fp32 arithmetic before the cast; a "
        "non-unit upstream gradient with reduction='none' rounds twice (<= 2 ulps). "
        "Observed: at most 0.19 of the (row-scaled) bound.",
    ),
    ("gpu", "loss", "float16"): Tolerance(
        rtol=2e-4,
        atol=2e-5,
        reason="As bf16: reference on the same fp16-rounded logits, fp32 arithmetic.",
    ),
    ("gpu", "grad", "float16"): Tolerance(
        rtol=5e-3,
        atol=1e-5,
        reason="fp16 keeps 11 significant bits (relative rounding 4.9e-4); gradient "
        "entries below fp16's subnormal range flush, hence the absolute floor.",
    ),
    # --- gpu.vocab_parallel_amid_loss against gpu.amid_loss on the full rows ----------------
    # (against amid_ref the "gpu" rows apply; these bound the sharded loss's departure from
    # the unsharded one, which is only the order of the row sums.)
    ("vocab_parallel", "loss", "float64"): Tolerance(
        rtol=1e-12,
        atol=1e-13,
        reason="The same float64 kernels on each slice; only the row sums are split into "
        "partial sums added across ranks (and Z is summed unshifted), a few ulps of the "
        "row's terms. The floor: the log-probabilities themselves differ by eps*|log p| "
        "(the normalizer is subtracted as (s - M) - log S instead of s - (M + log S)), 2e-14 "
        "at log p = -90 on the rows of logits spanning +-45, and a loss near 0 is a sum of "
        "such terms (observed 5e-15).",
    ),
    ("vocab_parallel", "grad", "float64"): Tolerance(
        rtol=1e-12,
        atol=1e-13,
        reason="As the loss (the floor from log-probabilities near -90, observed 1.1e-14 "
        "for KL(q||p) on such a row); applied row-scaled (atol*max(1, max_j |g_row,j|)) as "
        "the gpu grad rows are: an entry g_j - q_j*(A - C*B) rounds at a few ulps of the "
        "row's largest terms, or of the row's divergence value when the test knows it "
        "(reduction 'none'): A = sum_x g_x rounds at eps*sum|g_x|, as large as 2*chi2 "
        "(1e13 on rows of logits spanning +-45, where entries of 5e8 differ by 1.5e-2 "
        "between summation orders).",
    ),
    # --- the fused lm_head loss against linear + gpu.amid_loss (float64) ------------------
    ("fused", "loss", "float64"): Tolerance(
        rtol=1e-12,
        atol=1e-12,
        reason="gpu.amid_fused_linear_loss against gpu.amid_loss on F.linear logits: the same "
        "per-chunk kernel on the same float64 logits; only the matmul blocking and the "
        "summation order over rows differ (a few ulps). Observed: |diff| <= 2e-16.",
    ),
    ("fused", "grad", "float64"): Tolerance(
        rtol=1e-12,
        atol=1e-12,
        reason="Hidden-state, weight and bias gradients: G.W, G^T.h and sum(G) accumulated "
        "chunk by chunk in float64 against autograd's one matmul of the full G; a few ulps "
        "of the summation order. Observed: |diff| <= 1e-15 on entries of size ~1.",
    ),
    # --- conformance: an external implementation against amid_ref (float64) ------------
    # (loss and grad use the "gpu" rows: the same situation, an implementation held to
    # amid_ref; the mixture kind has its own rows, log-scaled with atol 0.)
    ("conformance", "log_mixture", "float64"): Tolerance(
        rtol=1e-11,
        atol=0.0,
        log_scaled=True,
        reason="An independent float64 implementation of the stable log-domain formula is "
        "within O(eps*max(1,|log r|)) of exact; the reference itself is within 1e-12 of "
        "mpmath; 10x headroom over that for summation order in log Z.",
    ),
    ("conformance", "log_mixture", "float32"): Tolerance(
        rtol=1e-5,
        atol=0.0,
        log_scaled=True,
        reason="fp32 (eps 1.2e-7): log m from log p, log q takes a few roundings of size "
        "eps*|log p|, log Z adds eps*log2(V); 1e-5 is ~80 eps of headroom. The naive "
        "logaddexp/beta form fails by eps/|beta| (0.1 at alpha = 1 +- 1e-6). The "
        "conformance check scales it by max(1, |log r|, |log p|, |log q|) per entry: an "
        "fp32 input of magnitude 5000 is itself resolved only to eps*5000.",
    ),
    ("conformance", "log_mixture", "bfloat16"): Tolerance(
        rtol=8e-3,
        atol=0.0,
        log_scaled=True,
        reason="An implementation may return log r in the input dtype: bf16 keeps 8 bits, "
        "so the output rounding alone is up to 2^-8 = 3.9e-3 relative; 2x headroom for "
        "the fp32 arithmetic before the cast.",
    ),
    ("conformance", "log_mixture", "float16"): Tolerance(
        rtol=1e-3,
        atol=0.0,
        log_scaled=True,
        reason="As bf16 with fp16's 11 bits: output rounding up to 4.9e-4 relative, 2x headroom.",
    ),
}


def tolerance(suite: str, quantity: str, dtype: str = "float64") -> Tolerance:
    """Look up a tolerance; a missing entry is an error, never a silent default."""
    try:
        return TOLERANCES[(suite, quantity, dtype)]
    except KeyError:
        raise KeyError(
            f"no tolerance for suite={suite!r}, quantity={quantity!r}, dtype={dtype!r}; "
            "add it to amid_ref/tolerances.py with its reason"
        ) from None


def assert_within(got, want, tol: Tolerance, *, what: str = "value") -> None:
    """Assert ``|got - want| <= atol + rtol * scale`` elementwise, with exact agreement of
    infinities and of exact zeros where ``want`` is exactly zero and ``atol`` is 0.

    Raises ``AssertionError`` naming the worst entry.
    """
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise AssertionError(f"{what}: shape {got.shape} != expected {want.shape}")
    if np.isnan(want).any():
        raise AssertionError(
            f"{what}: the expected value contains NaN at {np.argwhere(np.isnan(want))[:5]}"
        )
    if np.isnan(got).any():
        raise AssertionError(f"{what}: NaN in result at {np.argwhere(np.isnan(got))[:5]}")
    inf_want = np.isinf(want)
    bad_inf = (np.isinf(got) | inf_want) & (got != want)
    if bad_inf.any():
        i = tuple(np.argwhere(bad_inf)[0])
        raise AssertionError(f"{what}: infinity mismatch at {i}: got {got[i]!r}, want {want[i]!r}")
    finite = ~inf_want
    scale = np.abs(want)
    if tol.log_scaled:
        scale = np.maximum(1.0, scale)
    bound = tol.atol + tol.rtol * scale
    with np.errstate(invalid="ignore"):
        err = np.where(finite, np.abs(got - want), 0.0)
    excess = np.where(finite, err - bound, -np.inf)
    if (excess > 0).any():
        i = tuple(np.unravel_index(int(np.argmax(excess)), excess.shape))
        raise AssertionError(
            f"{what}: error {err[i]:.3e} exceeds bound {bound[i]:.3e} at {i} "
            f"(got {got[i]!r}, want {want[i]!r}; rtol={tol.rtol}, atol={tol.atol})"
        )


def indicator_ties(log_p, log_q, dtype: str = "float32") -> np.ndarray:
    """Entries where p and q tie within the rounding of a log-softmax computed in ``dtype``
    (float32 for the float32, bfloat16 and float16 inputs, whose arithmetic is float32):
    ``|log q − log p| ≤ 8 eps (1 + |log p|)``. At α = ±inf the assistant's weight w is an
    indicator (½ at exact ties) that jumps there, so the gradient of an implementation
    working in that dtype may take either side of the jump, and the whole row's gradient
    with it (through the projections): such rows are not held to the reference."""
    eps = np.finfo(np.float64 if dtype == "float64" else np.float32).eps
    lp = np.asarray(log_p, dtype=np.float64)
    lq = np.asarray(log_q, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.abs(lq - lp) <= 8 * eps * (1.0 + np.abs(lp))
