"""The GRPO objective as pure functions over tensors (tested against TRL's GRPOTrainer on identical inputs).

Shapes: B completions (G per prompt, grouped contiguously), T completion positions; ``mask`` is 1 on
completion tokens and 0 on padding (prompt tokens are never part of these tensors).
"""

from __future__ import annotations

import torch

from ehrr1.config import LossType, RewardScale


def group_advantages(rewards: torch.Tensor, group_size: int, scale: RewardScale = RewardScale.group) -> torch.Tensor:
    """Rewards minus their group's mean, divided by the group's (or batch's) std + 1e-4; groups with equal
    rewards get zero advantages. ``rewards``: [prompts * group_size], each prompt's group together."""
    grouped = rewards.view(-1, group_size)
    centred = (grouped - grouped.mean(dim=1, keepdim=True)).view(-1)
    if scale is RewardScale.none:
        return centred
    if scale is RewardScale.group:
        std = grouped.std(dim=1) if group_size > 1 else torch.zeros(grouped.shape[0])
        std = std.repeat_interleave(group_size)
    else:
        std = rewards.std().expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
    return centred / (std + 1e-4)


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    beta: float = 0.0,
    ref_logps: torch.Tensor | None = None,
    loss_type: LossType = LossType.grpo,
    max_completion_length: int | None = None,
    num_items: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate with separate low/high epsilons, plus beta x k3 KL to the reference.

    ``logps``, ``old_logps``, ``ref_logps``, ``mask``: [rows, completion_len] (a row: one completion);
    ``advantages``: [rows]. ``max_completion_length``: dr_grpo's normaliser (default completion_len);
    ``num_items``: dapo's (default: the mask's tokens). Returns the loss and detached statistics (kl, clip
    fractions).
    """
    mask = mask.to(logps.dtype)
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    adv = advantages.unsqueeze(1)
    per_token = -torch.min(ratio * adv, clipped * adv)
    kl = None
    if beta != 0.0:
        if ref_logps is None:
            raise ValueError("beta != 0 needs the reference model's log-probabilities (ref_logps)")
        kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1
        per_token = per_token + beta * kl
    tokens = mask.sum().clamp(min=1.0)
    if loss_type is LossType.grpo:
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type is LossType.bnpo:
        loss = (per_token * mask).sum() / tokens
    elif loss_type is LossType.dr_grpo:
        loss = (per_token * mask).sum() / (per_token.size(0) * (max_completion_length or per_token.size(1)))
    else:
        loss = (per_token * mask).sum() / (num_items if num_items is not None else tokens)
    with torch.no_grad():
        low = ((ratio < 1 - epsilon_low) & (adv < 0)).to(mask.dtype)
        high = ((ratio > 1 + epsilon_high) & (adv > 0)).to(mask.dtype)
        stats = {
            "clip_fraction_low": (low * mask).sum() / tokens,
            "clip_fraction_high": (high * mask).sum() / tokens,
            "clip_fraction": ((low + high) * mask).sum() / tokens,
            "kl": (kl * mask).sum() / tokens if kl is not None else torch.zeros(()),
        }
    return loss, stats


def completion_logps(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_length: int
) -> torch.Tensor:
    """Log-probabilities of the last ``completion_length`` tokens of each row under ``model`` [B, T]."""
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # left-padded prompts: as generate counts
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        use_cache=False,
        logits_to_keep=completion_length + 1,  # the vocabulary projection only where completions are scored
    ).logits
    logits = logits[:, :-1].float()
    targets = input_ids[:, -completion_length:]
    return torch.gather(logits.log_softmax(-1), 2, targets.unsqueeze(-1)).squeeze(-1)
