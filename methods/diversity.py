"""Greedy max-min ("farthest-point") diversity selection on cosine distance -- the one kernel shared by
SEATS Stage I (weighted, per window; seats-reference 7.3) and DivPrune / DivPrune-om (unweighted,
global or per window; baselines-reference 4.1).

For each of W equal-size groups of n tokens (rows of ``features``):

1. rows normalised by ``norm + 1e-8`` in float32; ``Dist[i, j] = 1 - x_i . x_j``;
2. optional column weights: ``M[i, j] = Dist[i, j] * w_j`` (SEATS: encoder attention x 1e6);
3. first pick = argmax over columns j of the *second-smallest* entry of column j (the smallest is the
   self-distance), lowest index on ties;
4. then ``k - 1`` times: pick the argmax of ``min over selected s of M[s, j]`` (lowest index on ties);
   a picked token's running value is set to -1 so it is never picked again.

Step 4's sentinel is SEATS' rule; the released DivPrune leaves a picked token at its self-distance
(about 0), which only differs when a group holds exact duplicates (DivPrune could then pick an index
twice and keep fewer than k tokens).  Here every pick is distinct, for both methods.
"""

from __future__ import annotations

from typing import Callable

import torch

NORM_EPS = 1e-8
SELECTED_SENTINEL = -1.0


def farthest_point_keep(features: torch.Tensor, k: int, column_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Keep ``k`` tokens per group by greedy max-min selection.

    features: [W, n, D]; column_weight: [W, n] or None (unweighted: the plain distance).
    Returns a bool keep mask [W, n] (``k >= n`` keeps the whole group; ``k <= 0`` keeps nothing).
    The greedy loop runs ``k - 1`` times over the whole batch of groups.
    """
    num_groups, n, _ = features.shape
    device = features.device
    if k >= n:
        return torch.ones(num_groups, n, dtype=torch.bool, device=device)
    if k <= 0:
        return torch.zeros(num_groups, n, dtype=torch.bool, device=device)
    unit = features.float()
    unit = unit / (unit.norm(dim=-1, keepdim=True) + NORM_EPS)  # [W, n, D]
    weighted = 1 - torch.bmm(unit, unit.transpose(1, 2))  # [W, n, n], Dist[w, i, j]
    if column_weight is not None:
        # Only columns are scaled: weighted[w, i, j] = Dist[w, i, j] * w_j (not symmetric).
        weighted = weighted * column_weight.float()[:, None, :]

    rows = torch.arange(num_groups, device=device)
    # First pick: the token whose nearest *other* token is farthest (the smallest value of each
    # column is normally the self-distance, so take the second smallest).
    second_smallest = weighted.topk(2, dim=1, largest=False).values[:, 1, :]  # [W, n]
    pick = second_smallest.argmax(dim=1)  # [W], first index on ties
    selected = torch.zeros(num_groups, n, dtype=torch.bool, device=device)
    selected[rows, pick] = True
    min_to_selected = weighted[rows, pick].clone()  # [W, n]
    min_to_selected[rows, pick] = SELECTED_SENTINEL
    for _ in range(k - 1):
        pick = min_to_selected.argmax(dim=1)  # [W]
        selected[rows, pick] = True
        min_to_selected = torch.minimum(min_to_selected, weighted[rows, pick])
        min_to_selected[rows, pick] = SELECTED_SENTINEL
    return selected


def windowed_keep_mask(
    features: torch.Tensor,
    weights: torch.Tensor | None,
    window_size: int,
    keep_count: Callable[[int], int],
) -> torch.Tensor:
    """Farthest-point keep mask over one modality's tokens, window by window.

    features: [N, D] (sequence order); weights: [N] column weights or None.  Windows are consecutive
    blocks of ``window_size`` tokens (``window_size >= N``: one global window); the last, shorter
    window is its own batch.  ``keep_count(n)`` gives the tokens kept in a window of length n.
    Returns a bool mask [N].
    """
    num_tokens = features.shape[0]
    keep = torch.ones(num_tokens, dtype=torch.bool, device=features.device)
    if num_tokens == 0:
        return keep
    window_size = max(1, min(window_size, num_tokens))
    num_full = num_tokens // window_size
    groups = [(0, num_full, window_size)]  # (start token, number of windows, window length)
    if num_tokens % window_size:
        groups.append((num_full * window_size, 1, num_tokens % window_size))
    for start, count, length in groups:
        if count == 0:
            continue
        stop = start + count * length
        group_features = features[start:stop].reshape(count, length, -1)  # [W, n, D]
        group_weights = None if weights is None else weights[start:stop].reshape(count, length)
        keep[start:stop] = farthest_point_keep(group_features, keep_count(length), group_weights).reshape(-1)
    return keep
