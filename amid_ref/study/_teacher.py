"""A synthetic teacher whose next-token distribution is known exactly.

The teacher is a seeded random mixture-of-softmaxes model over a vocabulary of ``V``
tokens, evaluated in float64 with NumPy. Everything is generated at run time from the seed;
nothing is downloaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

__all__ = ["SyntheticTeacher", "TeacherConfig", "make_teacher"]


@dataclass(frozen=True)
class TeacherConfig:
    """Shape and sharpness of the synthetic teacher.

    Parameters
    ----------
    vocab_size : int
        Vocabulary size ``V``.
    context_dim : int
        Dimension of the context vectors ``x`` (drawn i.i.d. from N(0, I)).
    token_dim : int
        Dimension of the (unit-norm) token embeddings ``u_v`` that the components score.
    n_components : int
        Number ``K`` of softmax components mixed per context (the teacher's modes).
    sharpness : float
        Scale ``κ`` of the component logits: larger is peakier components.
    zipf_exponent : float
        Exponent ``s`` of the Zipf token bias ``-s log(1 + rank_v)``.
    mixing_scale : float
        Scale of the context-dependent mixing logits (0 gives equal weights 1/K).
    temperature : float
        Teacher temperature ``T``: the final distribution is ``p^(1/T)`` renormalized, so
        ``T < 1`` pushes most probabilities towards zero (down to 1e-300 and below).
    top_k : int or None
        If set, only the ``top_k`` most probable tokens of each context keep their mass
        (renormalized); all others are exactly zero (``-inf`` teacher logits).
    n_train, n_test : int
        Number of training and held-out contexts.
    """

    vocab_size: int = 2048
    context_dim: int = 16
    token_dim: int = 8
    n_components: int = 4
    sharpness: float = 24.0
    zipf_exponent: float = 1.0
    mixing_scale: float = 0.5
    temperature: float = 1.0
    top_k: int | None = None
    n_train: int = 2048
    n_test: int = 512

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_dim", "token_dim", "n_components", "n_train", "n_test"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TeacherConfig.{name} must be a positive int, got {value!r}")
        if self.vocab_size < 2:
            raise ValueError(f"TeacherConfig.vocab_size must be >= 2, got {self.vocab_size}")
        for name in ("sharpness", "zipf_exponent", "mixing_scale"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"TeacherConfig.{name} must be finite and >= 0, got {value!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"TeacherConfig.temperature must be > 0, got {self.temperature!r}")
        if self.top_k is not None and not (1 <= self.top_k <= self.vocab_size):
            raise ValueError(
                f"TeacherConfig.top_k must be None or in [1, vocab_size], got {self.top_k!r}"
            )

    def variant(self, **changes) -> TeacherConfig:
        """A copy with some fields changed (same seed gives the same contexts and weights)."""
        return replace(self, **changes)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - np.max(z, axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


@dataclass(frozen=True, eq=False)
class SyntheticTeacher:
    """Seeded mixture-of-softmaxes teacher with exact float64 log-probabilities.

    For a context ``x``, with unit token embeddings ``u_v``, Zipf bias ``b_v``,
    component directions ``c_k(x) = W_k x / ‖W_k x‖`` and mixing logits ``G x``:

    .. math::

        p(v \\mid x) \\propto \\Big[\\sum_{k=1}^{K} \\pi_k(x)\\,
            \\operatorname{softmax}_v\\big(b_v + \\kappa\\,\\langle u_v, c_k(x)\\rangle\\big)
            \\Big]^{1/T},
        \\qquad \\pi(x) = \\operatorname{softmax}(s_\\pi\\, G x),

    optionally truncated to its ``top_k`` tokens. Each component is peaked on the few
    tokens whose embeddings point towards ``c_k(x)``, so the conditionals are multi-modal
    (up to ``K`` well-separated modes), the marginals are Zipf-like, and most of the ``V``
    probabilities are tiny (exactly zero outside the top-k when ``top_k`` is set).

    Attributes
    ----------
    train_contexts, test_contexts : numpy.ndarray
        Shapes (n_train, context_dim) and (n_test, context_dim), float64.
    train_log_probs, test_log_probs : numpy.ndarray
        Exact teacher log-probabilities, shapes (n_train, V) and (n_test, V), float64;
        ``-inf`` marks exact zeros.
    """

    config: TeacherConfig
    seed: int
    token_embeddings: np.ndarray
    token_bias: np.ndarray
    component_maps: np.ndarray
    mixing_map: np.ndarray
    train_contexts: np.ndarray
    test_contexts: np.ndarray
    train_log_probs: np.ndarray
    test_log_probs: np.ndarray

    def log_probs(self, contexts: np.ndarray) -> np.ndarray:
        """Exact teacher log-probabilities for contexts of shape (N, context_dim) → (N, V)."""
        cfg = self.config
        x = np.asarray(contexts, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != cfg.context_dim:
            raise ValueError(
                f"contexts must have shape (N, {cfg.context_dim}), got {np.shape(contexts)}"
            )
        log_mixing = _log_softmax(cfg.mixing_scale * x @ self.mixing_map.T)  # (N, K)
        out = np.full((x.shape[0], cfg.vocab_size), -np.inf)
        for k in range(cfg.n_components):
            direction = x @ self.component_maps[k]
            direction /= np.linalg.norm(direction, axis=1, keepdims=True)
            logits = self.token_bias + cfg.sharpness * direction @ self.token_embeddings.T
            out = np.logaddexp(out, log_mixing[:, k : k + 1] + _log_softmax(logits))
        if cfg.temperature != 1.0:
            out = _log_softmax(out / cfg.temperature)
        if cfg.top_k is not None and cfg.top_k < cfg.vocab_size:
            drop = np.argsort(-out, axis=1, kind="stable")[:, cfg.top_k :]
            np.put_along_axis(out, drop, -np.inf, axis=1)
            out = _log_softmax(out)
        return out


def make_teacher(config: TeacherConfig | None = None, seed: int = 0) -> SyntheticTeacher:
    """Build the synthetic teacher and its train/held-out contexts from ``seed``.

    Two configurations that differ only in ``temperature`` or ``top_k`` give teachers with
    the same weights and the same contexts (the transforms are applied last), so a
    "cold" or "truncated" teacher is the base teacher made sharper.

    Parameters
    ----------
    config : TeacherConfig, optional
        Defaults to ``TeacherConfig()``.
    seed : int
        Seed of the NumPy generator that draws weights and contexts.

    Returns
    -------
    SyntheticTeacher
    """
    cfg = TeacherConfig() if config is None else config
    if not isinstance(cfg, TeacherConfig):
        raise TypeError(f"config must be a TeacherConfig, got {type(cfg).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    emb = rng.standard_normal((cfg.vocab_size, cfg.token_dim))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ranks = rng.permutation(cfg.vocab_size) + 1
    bias = -cfg.zipf_exponent * np.log1p(ranks.astype(np.float64))
    comp = rng.standard_normal((cfg.n_components, cfg.context_dim, cfg.token_dim))
    mixing = rng.standard_normal((cfg.n_components, cfg.context_dim)) / math.sqrt(cfg.context_dim)
    x_train = rng.standard_normal((cfg.n_train, cfg.context_dim))
    x_test = rng.standard_normal((cfg.n_test, cfg.context_dim))
    teacher = SyntheticTeacher(
        config=cfg,
        seed=int(seed),
        token_embeddings=emb,
        token_bias=bias,
        component_maps=comp,
        mixing_map=mixing,
        train_contexts=x_train,
        test_contexts=x_test,
        train_log_probs=np.empty((0, cfg.vocab_size)),
        test_log_probs=np.empty((0, cfg.vocab_size)),
    )
    object.__setattr__(teacher, "train_log_probs", teacher.log_probs(x_train))
    object.__setattr__(teacher, "test_log_probs", teacher.log_probs(x_test))
    return teacher
