"""ABD's adaptive bidirectional displacement of patches between two views (Chi et al., CVPR
2024; chy-upc/ABD ``code/utils/displacement.py`` ``ABD_R_BCP``, lines 49-104, at 4efd525).

Each image of each view is cut into a ``grid x grid`` of patches. In each view, the patch its
network is least confident about (mean of the per-pixel top softmax probability) is replaced by
a patch of the *other* view: with probability ``adaptive_p`` the one among the other view's
``top_num`` most confident patches whose class distribution (softmax of the patch's mean logits)
is closest in KL divergence to the replaced patch's, otherwise the other view's most confident
patch. One patch per view per image moves; nothing else changes, and labels never move.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def to_patches(x: torch.Tensor, grid: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, grid x grid, C, H / grid, W / grid], row-major over the grid."""
    n, c, h, w = x.shape
    ph, pw = h // grid, w // grid
    return (
        x.reshape(n, c, grid, ph, grid, pw)
        .permute(0, 2, 4, 1, 3, 5)
        .reshape(n, grid * grid, c, ph, pw)
    )


def from_patches(p: torch.Tensor, grid: int) -> torch.Tensor:
    """The inverse of :func:`to_patches`."""
    n, _, c, ph, pw = p.shape
    return (
        p.reshape(n, grid, grid, c, ph, pw)
        .permute(0, 3, 1, 4, 2, 5)
        .reshape(n, c, grid * ph, grid * pw)
    )


@dataclass(frozen=True)
class Choice:
    """Per image: the patch index of each view that is replaced, and the patch index of the
    other view that replaces it."""

    target1: torch.Tensor
    source_for1: torch.Tensor
    target2: torch.Tensor
    source_for2: torch.Tensor


def _closest(
    candidates: torch.Tensor, log_probs: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Among ``candidates`` [N, T] patch indices, the one whose distribution (``log_probs``
    [N, P, K]) is closest to ``target`` [N, K] (probabilities): min KL(target || candidate),
    the source's ``F.kl_div(log_softmax(candidate), softmax(target), reduction='sum')``."""
    cand = torch.gather(
        log_probs, 1, candidates[..., None].expand(-1, -1, log_probs.shape[-1])
    )  # [N, T, K]
    kl = (torch.xlogy(target, target)[:, None] - target[:, None] * cand).sum(-1)
    return torch.gather(candidates, 1, kl.argmin(1, keepdim=True))[:, 0]


def choose(
    confidence1: torch.Tensor,
    confidence2: torch.Tensor,
    logits1: torch.Tensor,
    logits2: torch.Tensor,
    grid: int,
    top_num: int,
    adaptive: torch.Tensor,
) -> Choice:
    """Which patches move, from each view's confidence [N, H, W] and logits [N, K, H, W];
    ``adaptive`` [N] bool picks the KL rule per image."""
    conf1 = to_patches(confidence1[:, None], grid).mean((2, 3, 4))  # [N, P]
    conf2 = to_patches(confidence2[:, None], grid).mean((2, 3, 4))
    log1 = to_patches(logits1, grid).mean((3, 4)).log_softmax(-1)  # [N, P, K]
    log2 = to_patches(logits2, grid).mean((3, 4)).log_softmax(-1)
    top1 = conf1.topk(top_num, 1).indices
    top2 = conf2.topk(top_num, 1).indices
    least1, least2 = conf1.argmin(1), conf2.argmin(1)
    rows = torch.arange(conf1.shape[0], device=conf1.device)
    kl_for1 = _closest(top2, log2, log1[rows, least1].exp())  # view 2's patch for view 1
    kl_for2 = _closest(top1, log1, log2[rows, least2].exp())
    return Choice(
        target1=least1,
        source_for1=torch.where(adaptive, kl_for1, top2[:, 0]),
        target2=least2,
        source_for2=torch.where(adaptive, kl_for2, top1[:, 0]),
    )


def displace(
    view1: torch.Tensor, view2: torch.Tensor, choice: Choice, grid: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both views [N, C, H, W] with the chosen patches replaced (from the views as given)."""
    p1, p2 = to_patches(view1, grid), to_patches(view2, grid)
    rows = torch.arange(p1.shape[0], device=p1.device)
    out1, out2 = p1.clone(), p2.clone()
    out1[rows, choice.target1] = p2[rows, choice.source_for1]
    out2[rows, choice.target2] = p1[rows, choice.source_for2]
    return from_patches(out1, grid), from_patches(out2, grid)
