"""The defenses experiment (issue 26, `make results-defenses`): HaH with
adversarial training, noise training and a continuous threshold.

Its runs are entries of `experiments.results.ABLATIONS` (so `--seeded` and
`--ablations` select them), each `(base network, --set overrides, what it
tests)`; a HaH-based run gets the `--hah-set` overrides first (the acting
alphas), its own after them. "recipe" is the robust recipe of the regime
study, the HaH network without its threshold (`hah_no_threshold`).

- Adversarial training (AT), L-inf eps 0.1 in pixel space: FGSM with a
  random start (Wong et al. 2020, `*_at`) for every family, and PGD-7
  (Madry et al. 2018, `*_pgd_at`), meant for one seed, to check FGSM-RS
  for catastrophic overfitting (its model far less robust under PGD than
  the PGD-trained one). `recipe_at_alpha0` is the recipe-AT twin with the
  HaH cost's weights at 0: `recipe_at - recipe_at_alpha0` isolates what
  the cost adds on top of AT (`recipe_at - standard_at` compares whole
  architectures).
- Noise training with the clean/noisy mix: sigma 0.25 (randomized
  smoothing's usual base-classifier sigma, the `standard_noise`
  ablation's) on half of each batch (`noise_fraction` 0.5: docs/TRAINING.md,
  "Noise training that keeps clean accuracy", and
  tests/test_noise_training.py show it keeps the clean accuracy that
  noise on every image loses with batch norm). `standard_noise` (noise on
  every image) stays as it was.
- `hah_soft`: the HaH network with the continuous threshold,
  `max(a - t_k, 0)` (`block_options.threshold_mode=soft`).

Transfer sources follow `results.plan`: the undefended standard network
of the run's seed (of the first seed for a one-seed run). For an AT
model this is a weak transfer attack (examples of an undefended source
transfer poorly to a robust model), and it is kept on purpose: its role
in the suite is the gradient-masking check (a source with plain
gradients, trained on the same data), which an AT source would serve no
better; the worst case of an AT model comes from the white-box attacks,
BPDA, Square and the second evaluation's AutoAttack at standard
strength, whatever the transfer attack finds.

`PAIRS` are the seed-by-seed differences the report adds for these runs
(`results_summary.comparisons`), beside HaH minus every undefended network and
each `X - X_alpha0` twin that it always shows.
"""

#: `--set` overrides of each defense.
FGSM_AT = ["adversarial.attack=fgsm_rs", "adversarial.eps=0.1"]
PGD_AT = ["adversarial.attack=pgd", "adversarial.eps=0.1"]
NOISE_MIX = ["noise_sigma=0.25", "noise_fraction=0.5"]
#: Batch norm's moving statistics from the clean batch (issue 36: the
#: collapse of half the recipe-family FGSM-RS runs).
CLEAN_BN = ["adversarial.batch_norm_statistics=clean"]
RECIPE = ["block_options.threshold=null"]

#: name -> (base network, `--set` overrides, what it tests).
DEFENSES = {
    "standard_at": ("standard", FGSM_AT,
                    "standard network, adversarially trained (FGSM with a random start, "
                    "L∞ eps 0.1)"),
    "standard_pgd_at": ("standard", PGD_AT,
                        "standard network, adversarially trained (PGD-7, L∞ eps 0.1)"),
    "recipe_at": ("hah", RECIPE + FGSM_AT,
                  "robust recipe (HaH without the threshold), adversarially trained "
                  "(FGSM with a random start, L∞ eps 0.1)"),
    "recipe_pgd_at": ("hah", RECIPE + PGD_AT,
                      "robust recipe, adversarially trained (PGD-7, L∞ eps 0.1)"),
    "recipe_at_alpha0": ("hah", RECIPE + ["hah_alphas=0.0"] + FGSM_AT,
                         "robust recipe without the HaH cost (alpha = 0), adversarially "
                         "trained (FGSM with a random start, L∞ eps 0.1)"),
    "hah_at": ("hah", FGSM_AT,
               "HaH network, adversarially trained (FGSM with a random start, L∞ eps 0.1)"),
    "hah_pgd_at": ("hah", PGD_AT,
                   "HaH network, adversarially trained (PGD-7, L∞ eps 0.1)"),
    "standard_noise_mix": ("standard", NOISE_MIX,
                           "standard network trained with Gaussian noise (sigma 0.25) on "
                           "half of each batch"),
    "recipe_noise_mix": ("hah", RECIPE + NOISE_MIX,
                         "robust recipe trained with Gaussian noise (sigma 0.25) on half "
                         "of each batch"),
    "hah_soft": ("hah", ["block_options.threshold_mode=soft"],
                 "HaH network with the continuous threshold max(a - t_k, 0)"),
    "standard_at_bnclean": ("standard", FGSM_AT + CLEAN_BN,
                            "standard_at with batch norm's moving statistics from the "
                            "clean batch"),
    "recipe_at_bnclean": ("hah", RECIPE + FGSM_AT + CLEAN_BN,
                          "recipe_at with batch norm's moving statistics from the clean "
                          "batch"),
    "recipe_at_alpha0_bnclean": ("hah", RECIPE + ["hah_alphas=0.0"] + FGSM_AT + CLEAN_BN,
                                 "recipe_at_alpha0 with batch norm's moving statistics "
                                 "from the clean batch"),
}

#: `(first, second)`: the report's `first - second`, seed by seed, when
#: both ran (a one-seed run pairs with its seed of a seeded network).
PAIRS = (
    # What each defense buys a network.
    ("standard_at", "standard"), ("recipe_at", "hah_no_threshold"), ("hah_at", "hah"),
    ("standard_noise_mix", "standard"), ("recipe_noise_mix", "hah_no_threshold"),
    # Does the HaH design add to the defense?
    ("recipe_at", "standard_at"), ("hah_at", "standard_at"),
    ("recipe_noise_mix", "standard_noise_mix"),
    # Catastrophic overfitting: PGD-7 against FGSM-RS training.
    ("standard_pgd_at", "standard_at"), ("recipe_pgd_at", "recipe_at"),
    ("hah_pgd_at", "hah_at"),
    # The continuous threshold against the hard one and against the recipe.
    ("hah_soft", "hah"), ("hah_soft", "hah_no_threshold"),
    # The batch-norm statistics of adversarial training (issue 36).
    ("standard_at_bnclean", "standard_at"), ("recipe_at_bnclean", "recipe_at"),
    ("recipe_at_alpha0_bnclean", "recipe_at_alpha0"),
    ("recipe_at_bnclean", "recipe_at_alpha0_bnclean"),
    ("recipe_at_bnclean", "standard_at_bnclean"),
)
