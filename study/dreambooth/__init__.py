"""DreamBooth (Ruiz et al. 2023) on the ladder: the subject data, prior-preservation class images and loss,
and the evaluator of subject and prompt fidelity. Core: no Ray, no trainer."""
