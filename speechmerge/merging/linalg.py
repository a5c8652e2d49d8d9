"""Linear algebra shared by the subspace merging methods (Iso-C/CTS, TSV-M, BoostedTSV-M, LoRS).

Everything here is a pure function of float tensors, deterministic, computed in float32 with
``torch.linalg.svd(full_matrices=False)`` (LAPACK gesdd on CPU). Tests and figures call these
functions directly.

* ``truncated_svd(m, k)`` -> ``(U_k, S_k, Vh_k)``: the top-k singular triplets, m ~ U_k diag(S_k) Vh_k.
* ``low_rank_approx(m, k)``: the best rank-k approximation U_k diag(S_k) Vh_k (Eckart–Young).
* ``polar_factor(m)``: the orthogonal factor W of the polar decomposition m = W H, i.e. the nearest
  matrix with orthonormal columns (rows, if m is wide) in Frobenius norm: W = U Vᵀ for m = U S Vᵀ.
  Directions whose singular value is numerically zero are left out (W = U_+ V_+ᵀ, the partial
  isometry), which makes W unique when m is rank deficient (e.g. identical task vectors) instead
  of depending on LAPACK's arbitrary completion; for full-rank input it is the usual U Vᵀ.
* ``newton_schulz(m, steps, coefficients)``: an SVD-free approximation of ``polar_factor``:
  X₀ = m / (‖m‖_F + eps), then X ← a X + b (X Xᵀ) X + c (X Xᵀ)² X, on the orientation whose
  Gram matrix X Xᵀ is the smaller one. Each step maps every singular value s of X through
  p(s) = a s + b s³ + c s⁵ and keeps the singular vectors.
  - ``"muon"`` = (3.4445, −4.7750, 2.0315): Keller Jordan's Muon quintic (5 steps), chosen for
    speed, not exactness: after 5 steps singular values that started at s₀/‖m‖_F ≥ 2e-3 lie in
    [0.68, 1.21] (measured on the scalar map), NOT at 1. Singular vectors are those of the polar
    factor, so polar_factor(newton_schulz(m)) == polar_factor(m).
  - ``"cubic"`` = (1.5, −0.5, 0): the classical Newton–Schulz iteration X ← 1.5 X − 0.5 X Xᵀ X,
    which converges to the polar factor exactly (quadratically near 1, but a singular value s₀ ≪ 1
    grows only by 1.5× per step, so it needs tens of steps).
  A sequence of per-step triples (a schedule) is accepted too.
* ``boost_spectrum(sigma, beta)``: BoostedTSV-M's singular-value boosting (see its docstring).
* ``magnitude_prune(m, keep_fraction)``: keep the k = int(numel · keep_fraction) largest |entries|
  (exact count via ``torch.topk``), zero the rest.
* ``lowrank_sparse_split(m, rank, keep_fraction)`` -> ``(L, S)``: L = low_rank_approx(m, rank),
  S = magnitude_prune(m − L, keep_fraction) (LoRS-Merging).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator, Sequence, Union

import torch

log = logging.getLogger(__name__)

NS_PRESETS: dict[str, tuple[float, float, float]] = {
    "muon": (3.4445, -4.7750, 2.0315),
    "cubic": (1.5, -0.5, 0.0),
}
# Band reached after 5 Muon steps by every singular value with s0 / ||m||_F >= MUON_BAND_MIN_INPUT.
MUON_BAND = (0.68, 1.21)
MUON_BAND_MIN_INPUT = 2e-3

Coefficients = Union[str, Sequence[float], Sequence[Sequence[float]]]


def _as_matrix(m: torch.Tensor, name: str = "m") -> torch.Tensor:
    if not isinstance(m, torch.Tensor) or m.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D tensor, got {getattr(m, 'shape', type(m))}")
    return m.float()


# (input, its version counter, factors) of each decomposition while ``svd_reuse`` is active
_reuse: list[tuple[torch.Tensor, int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] | None = None


@contextlib.contextmanager
def svd_reuse() -> Iterator[None]:
    """Within the block, ``svd`` of a matrix equal to one it already decomposed (same shape,
    dtype and entries, not modified since) returns the factors it computed then. A grid merge
    opens one block per tensor for the merges of its non-scale settings: BoostedTSV-M's β only
    boosts singular values, so every β shares the experts' SVDs and the polar factors of their
    stacked bases, computed once. The factors are the same tensors, so the merges are
    bit-identical to separate ones; callers never modify them in place."""
    global _reuse
    outer = _reuse
    _reuse = [] if outer is None else outer
    try:
        yield
    finally:
        _reuse = outer


def svd(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD in float32: m = U diag(S) Vh, S descending, r = min(m.shape) components.

    A wide m is decomposed as mᵀ (same factors, swapped): LAPACK is about twice as fast on tall input.
    LAPACK's divide-and-conquer driver can fail to converge on matrices with many repeated
    singular values (e.g. stacked orthonormal bases, as Iso-CTS and TSV-M orthogonalise); then
    the SVD is retried in float64 and, failing that, taken from the eigendecomposition of mᵀm
    (``_svd_by_eigh``).
    """
    m = _as_matrix(m)
    if _reuse is not None:
        for seen, version, factors in _reuse:
            if seen._version == version and seen.shape == m.shape and seen.dtype == m.dtype and torch.equal(seen, m):
                return factors
    if m.shape[0] < m.shape[1]:
        u, s, vh = _svd_tall(m.mT)
        factors = vh.mT, s, u.mT
    else:
        factors = _svd_tall(m)
    if _reuse is not None:
        _reuse.append((m, m._version, factors))
    return factors


def _svd_tall(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    try:
        return torch.linalg.svd(m, full_matrices=False)
    except torch.linalg.LinAlgError:
        log.warning("SVD of a %d×%d matrix did not converge in float32; retrying in float64", *m.shape)
    try:
        u, s, vh = torch.linalg.svd(m.double(), full_matrices=False)
    except torch.linalg.LinAlgError:
        log.warning("SVD of a %d×%d matrix did not converge in float64; using the eigendecomposition of mᵀm", *m.shape)
        u, s, vh = _svd_by_eigh(m.double())
    return u.float(), s.float(), vh.float()


def _svd_by_eigh(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of a tall m (rows ≥ cols) from mᵀm = V diag(S²) Vᵀ: U = m V / S, with the
    columns of U for (numerically) zero singular values completed to an orthonormal basis."""
    lam, v = torch.linalg.eigh(m.mT @ m)
    order = torch.argsort(lam, descending=True)
    lam, v = lam[order], v[:, order]
    s = lam.clamp_min(0).sqrt()
    keep = s > s[0] * max(m.shape) * torch.finfo(m.dtype).eps if s.numel() and s[0] > 0 else s > 0
    u = torch.zeros(m.shape[0], s.numel(), dtype=m.dtype, device=m.device)
    u[:, keep] = (m @ v[:, keep]) / s[keep]
    if not bool(keep.all()):  # complete U's columns for the null space: orthonormal, orthogonal to the rest
        q, _ = torch.linalg.qr(
            torch.cat(
                [
                    u[:, keep],
                    torch.randn(  # drawn on the host (the same numbers on any device), then moved
                        m.shape[0],
                        int((~keep).sum()),
                        dtype=m.dtype,
                        device="cpu",
                        generator=torch.Generator().manual_seed(0),
                    ).to(m.device),
                ],
                dim=1,
            )
        )
        u[:, ~keep] = q[:, int(keep.sum()) :]
    return u, s, v.mT


def truncated_svd(m: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k singular triplets (U_k: rows×k, S_k: k, Vh_k: k×cols); k is capped at min(m.shape)."""
    if int(k) != k or k < 0:
        raise ValueError(f"truncated_svd: k must be a non-negative integer, got {k!r}")
    u, s, vh = svd(m)
    k = min(int(k), s.numel())
    return u[:, :k], s[:k], vh[:k, :]


def low_rank_approx(m: torch.Tensor, k: int) -> torch.Tensor:
    """Best rank-k approximation of m (float32, same shape); k = 0 gives zeros."""
    u, s, vh = truncated_svd(m, k)
    return (u * s) @ vh


def _default_rtol(shape: torch.Size) -> float:
    # numpy.linalg.matrix_rank's default tolerance: max(shape) * eps(float32), relative to s_max.
    return max(shape) * torch.finfo(torch.float32).eps


def polar_factor(m: torch.Tensor, *, rtol: float | None = None) -> torch.Tensor:
    """Orthogonal polar factor W = U_+ V_+ᵀ of m = U S Vᵀ (nearest orthonormal-columns matrix).

    Singular values <= rtol · s_max (default max(shape) · eps_float32) count as zero and their
    directions are dropped, so the result is unique for rank-deficient input; for full-rank input
    this is exactly U Vᵀ (WᵀW = I if m is tall, W Wᵀ = I if wide).
    """
    m = _as_matrix(m)
    if m.numel() == 0:
        return m.clone()
    u, s, vh = svd(m)
    tol = (_default_rtol(m.shape) if rtol is None else float(rtol)) * float(s[0])
    r = int((s > tol).sum())
    return u[:, :r] @ vh[:r, :]


def ns_schedule(steps: int, coefficients: Coefficients) -> list[tuple[float, float, float]]:
    if int(steps) != steps or steps < 0:
        raise ValueError(f"newton_schulz: steps must be a non-negative integer, got {steps!r}")
    steps = int(steps)
    if isinstance(coefficients, str):
        if coefficients not in NS_PRESETS:
            raise ValueError(f"newton_schulz: unknown coefficient preset {coefficients!r}; known: {sorted(NS_PRESETS)}")
        return [NS_PRESETS[coefficients]] * steps
    coeffs = list(coefficients)
    if len(coeffs) == 3 and all(isinstance(c, (int, float)) for c in coeffs):
        return [tuple(float(c) for c in coeffs)] * steps  # type: ignore[list-item]
    if len(coeffs) == steps and all(len(c) == 3 for c in coeffs):
        return [tuple(float(x) for x in c) for c in coeffs]  # type: ignore[misc]
    raise ValueError(
        "newton_schulz: coefficients must be a preset name, one (a, b, c) triple, or one triple "
        f"per step ({steps} steps); got {coefficients!r}"
    )


def newton_schulz(
    m: torch.Tensor,
    steps: int = 5,
    coefficients: Coefficients = "muon",
    eps: float = 1e-7,
) -> torch.Tensor:
    """Approximate polar factor by Newton–Schulz iteration (see the module docstring).

    X₀ = m / (‖m‖_F + eps); each step X ← a X + (b A + c A²) X with A = X Xᵀ, computed on mᵀ when m
    is tall so that A is the smaller Gram matrix; the result has m's shape.
    """
    schedule = ns_schedule(steps, coefficients)
    x = _as_matrix(m)
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.mT
    x = x / (torch.linalg.matrix_norm(x) + eps)
    for a, b, c in schedule:
        gram = x @ x.mT
        poly = b * gram + c * (gram @ gram) if c != 0.0 else b * gram
        x = a * x + poly @ x
    return x.mT.contiguous() if transposed else x


def boost_threshold_index(sigma: torch.Tensor, beta: float) -> int:
    """j* = min{j : E_j >= beta}, E_j = Σ_{i<=j} σ_i² / Σ_i σ_i² (0-based; last index if never)."""
    _check_spectrum(sigma, beta)
    n = sigma.numel()
    energy = sigma.double() ** 2
    total = energy.sum()
    if n == 0 or total == 0 or beta >= 1.0:
        return max(n - 1, 0)
    cum = torch.cumsum(energy, 0) / total
    j = int(torch.searchsorted(cum, torch.tensor([float(beta)], dtype=torch.float64, device=cum.device))[0])
    return min(j, n - 1)


def boost_spectrum(sigma: torch.Tensor, beta: float) -> torch.Tensor:
    """BoostedTSV-M singular-value boosting of one descending spectrum.

    E_j = Σ_{i<=j} σ_i² / Σ_i σ_i² (cumulative energy of the spectrum given), j* = min{j : E_j >= β},
    σ_i ← max(σ_i, σ_{j*}) for all i: the tail after j* is raised to σ_{j*}, the head is unchanged.
    β = 1 is the identity (j* is the last index); it is returned unchanged without computing E, so
    float rounding of the cumulative sum can never move j* earlier. An all-zero spectrum is
    returned unchanged. Example: σ = [4, 2, 1, 1], E = [16, 20, 21, 22]/22;
    β = 0.5 -> j* = 0 -> [4, 4, 4, 4]; β = 0.9 -> j* = 1 -> [4, 2, 2, 2]; β = 0.95 -> unchanged.
    """
    _check_spectrum(sigma, beta)
    if beta >= 1.0 or sigma.numel() == 0:
        return sigma.clone()
    j = boost_threshold_index(sigma, beta)
    return torch.clamp(sigma, min=float(sigma[j]))


def _check_spectrum(sigma: torch.Tensor, beta: float) -> None:
    if not isinstance(sigma, torch.Tensor) or sigma.ndim != 1:
        raise ValueError(f"boost_spectrum: sigma must be a 1-D tensor, got {getattr(sigma, 'shape', sigma)!r}")
    if not (0.0 < float(beta) <= 1.0):
        raise ValueError(f"boost_spectrum: beta must be in (0, 1], got {beta!r}")
    if sigma.numel() > 1 and bool((sigma[1:] > sigma[:-1]).any()):
        raise ValueError("boost_spectrum: sigma must be sorted in descending order (as from an SVD)")
    if sigma.numel() and bool((sigma < 0).any()):
        raise ValueError("boost_spectrum: singular values must be non-negative")


def keep_count(numel: int, keep_fraction: float) -> int:
    """k = int(numel · keep_fraction), as in the LoRS-Merging authors' magnitude_prune."""
    if not (0.0 <= float(keep_fraction) <= 1.0):
        raise ValueError(f"keep_fraction must be in [0, 1], got {keep_fraction!r}")
    return int(numel * keep_fraction)


def magnitude_prune(m: torch.Tensor, keep_fraction: float) -> torch.Tensor:
    """Keep exactly k = int(numel · keep_fraction) entries of largest |m| (torch.topk), zero the rest."""
    x = m.float()
    k = keep_count(x.numel(), keep_fraction)
    if k >= x.numel():
        return x.clone()
    flat = x.reshape(-1)
    out = torch.zeros_like(flat)
    if k > 0:
        idx = torch.topk(flat.abs(), k, sorted=False).indices
        out[idx] = flat[idx]
    return out.view_as(x)


def lowrank_sparse_split(m: torch.Tensor, rank: int, keep_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """LoRS split: L = best rank-`rank` approximation of m; S = magnitude_prune(m − L, keep_fraction).

    Returns (L, S); the pruned task vector is L + S (no rescaling). keep_fraction = 1 gives
    L + S == m up to float rounding of (m − L) + L.
    """
    x = _as_matrix(m)
    low = low_rank_approx(x, rank)
    sparse = magnitude_prune(x - low, keep_fraction)
    return low, sparse
