"""``fastrobust study``: the paper's whole experiment in one command, as a report a person reads.

Goodwin et al. (HPEC 2020) train standard, 1-step and 7-step models, time them (Table I,
Figure 1), measure robustness over eps (Figure 2) and look inside them (Figures 3-5). A study
does all of it from one config (:mod:`fastrobust.study.config`), scores the perceptual
alignment of targeted perturbations with an independent judge
(:mod:`fastrobust.study.alignment`), checks the paper's claims against the measurements
(:mod:`fastrobust.study.claims`) and writes ``report.md`` and a self-contained
``report.html`` (:mod:`fastrobust.study.report`). See docs/architecture.md.
"""

from fastrobust.study.config import STAGES, StudyConfig

__all__ = ["STAGES", "StudyConfig"]
