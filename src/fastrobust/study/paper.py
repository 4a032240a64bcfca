"""What Goodwin et al. (HPEC 2020) report, as far as this project could look it up.

The report prints these next to the study's own numbers when the study runs the paper's setup
(CIFAR-10, ResNet-50, L2). Only values the project could verify are listed; the paper's
Table I hours and Figure 2 accuracies were not available to it, and the report says so rather
than printing guesses.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperFact:
    what: str
    value: str


#: the paper's claims, one line each, as the report's "paper says" column words them
CLAIMS = {
    "speed": "1-step (fast) adversarial training is about 3x faster than 7-step PGD training",
    "robust_at_eps": "1-step training reaches robustness comparable to 7-step PGD training at "
    "the training eps",
    "above_standard": "both robust models are far more robust than the standard model",
    "alignment": "robust models' large targeted perturbations look like the target class "
    "(Figure 5); a standard model's do not",
}

#: per-step cost relative to a standard training step, measured in the paper on V100 GPUs
PAPER_STEP_COST = {"fast": 2.4, "pgd7": 7.6}

#: the paper's CIFAR-10 ResNet-50 facts the project verified
CIFAR10_RESNET50 = (
    PaperFact("model, data", "ResNet-50 (23.5M parameters) on CIFAR-10, L2 threat model"),
    PaperFact(
        "recipe",
        "SGD lr 0.1, momentum 0.9, weight decay 5e-4, global batch 256, 150 epochs, lr x0.1 "
        "every 50 epochs, validation every 5 epochs",
    ),
    PaperFact("fast training time", "150 epochs in 2.9 h on 2 V100 GPUs (about 720 images/s)"),
    PaperFact(
        "cost of one training step, relative to standard",
        f"fast ~{PAPER_STEP_COST['fast']}x, 7-step PGD ~{PAPER_STEP_COST['pgd7']}x "
        f"(so 7-step / fast ~{PAPER_STEP_COST['pgd7'] / PAPER_STEP_COST['fast']:.1f}x)",
    ),
    PaperFact(
        "not available",
        "the paper's Table I hours per run and its Figure 2 accuracies could not be looked up "
        "by this project; they are not printed here rather than guessed",
    ),
)


def is_paper_setup(dataset: str, model: str) -> bool:
    """Is this the paper's own CIFAR-10 ResNet-50 setup?"""
    return dataset == "cifar10" and model == "resnet50"
