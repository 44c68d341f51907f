"""Distillation from the cross-encoder into the bi-encoder over the candidates of each query.

Neither seed paper trains the bi-encoder from the cross-encoder; the contract is on `distill_loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) between the two softmax distributions over each row's candidates.

    Inputs:
        student [R, n]: the bi-encoder's logits (its trained scale x cosine) of row r's n candidate
            pairs: the positive and the negatives drawn from the bi-encoder's own similarities,
            that is, its top candidates, which retrieve-then-rerank hands the cross-encoder.
        teacher [R, n]: the cross-encoder's logits of the same pairs, in the same order. Detached
            here: the cross-encoder teaches and is not pulled toward its student.
        temperature: both distributions are softmax(logits / temperature).
    Positives and negatives: none as such; every candidate's teacher probability is the target.
    Published loss: none of the seeds; the form is Hinton et al.'s (2015) soft-target
        distillation, as rerankers are distilled into dense retrievers (e.g. RocketQAv2, 2021).
    Returns: a scalar, temperature^2 x the mean over rows of KL(p_teacher || p_student), so that
        its gradient does not shrink with the temperature.
    """
    if student.shape != teacher.shape or student.dim() != 2:
        raise ValueError(
            f"distill_loss: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} "
            "must both be [rows, candidates]"
        )
    if temperature <= 0:
        raise ValueError(f"distill_loss: temperature must be > 0, got {temperature}")
    log_student = F.log_softmax(student / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher.detach() / temperature, dim=-1)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(-1)
    return temperature**2 * kl.mean()
