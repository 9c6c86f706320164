"""The zone-axis model the ``channelling`` policy ships with: `particles.TargetModel`,
the logistic model (with squared terms) of P(zone axis | particle features), fitted on the
particles of training fields 2000-2159 (never the benchmark's 90 000+) by

    python -m emauto.tasks.region_search.channelling 2000 2160

and pasted here (a few numbers: no weight file, nothing unpickled)."""

from __future__ import annotations

from emauto.tasks.region_search.particles import TargetModel

TARGET_MODEL = TargetModel(
    features=(
        "log_profile_slope",
        "log_peak_per_radius",
        "log_radius",
        "log_peak",
        "fill",
        "fit_r2",
    ),
    mean=(
        -2.4279032843187065,
        -2.300763410150167,
        0.7801792590732225,
        -1.5205841510769578,
        0.7185718535047836,
        0.5630354555781549,
    ),
    scale=(
        0.4842930522708389,
        0.1579301682082743,
        0.6019979742588781,
        0.5749958532863217,
        0.10728964722746483,
        0.19880950269331432,
    ),
    weights=(
        1.5322408852549472,
        2.8834461573598293,
        -0.15931819842519496,
        0.6251765154170543,
        0.4608609167613965,
        0.9076789336917631,
        0.09485735337845395,
        -0.8581541227508138,
        -0.23628466127537104,
        -0.46089562498357495,
        -0.24469791255847692,
        0.5196552990072064,
    ),
    bias=-0.6951384093821322,
    quadratic=True,
    trained_on="fields 2000-2159 (160)",
)
