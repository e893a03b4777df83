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
def _fgsm_at(eps):
    return ["adversarial.attack=fgsm_rs", f"adversarial.eps={eps}"]


def _noise_mix(sigma):
    return [f"noise_sigma={sigma}", "noise_fraction=0.5"]


FGSM_AT = _fgsm_at(0.1)
PGD_AT = ["adversarial.attack=pgd", "adversarial.eps=0.1"]
NOISE_MIX = _noise_mix(0.25)
#: Batch norm's moving statistics from the clean batch (issue 36: the
#: collapse of half the recipe-family FGSM-RS runs; the default since),
#: and from the adversarial batch (the default before: the runs of study 6
#: and their twins say so, so their configs stay the ones they ran).
CLEAN_BN = ["adversarial.batch_norm_statistics=clean"]
ADVERSARIAL_BN = ["adversarial.batch_norm_statistics=adversarial"]
RECIPE = ["block_options.threshold=null"]


def _l1(strength):
    """Keras's L1 activity regularizer on every HaH block's output."""
    return ["block_options.activity_regularizer="
            f"{{class_name: L1, config: {{l1: {strength:.1e}}}}}"]


def _l1_blocks(*strengths):
    """Keras's L1 activity regularizer with one strength per HaH block
    (first block first), the recipe's no-threshold on each."""
    blocks = ", ".join(f"{{activity_regularizer: {{class_name: L1, config: {{l1: {s:.1e}}}}}}}"
                       for s in strengths)
    return [f"block_options=[{blocks}]"] + RECIPE


#: The headline alphas (x30 the paper's) times 10/30 and 100/30.
ALPHAS_X10 = ["hah_alphas=[0.045,0.025]"]
ALPHAS_X100 = ["hah_alphas=[0.45,0.25]"]

#: The front study (issue 36): adversarial training at smaller budgets,
#: noise at other sigmas, the recipe at other cost weights, sparse routes.
FRONT = {
    "standard_at_eps002": ("standard", _fgsm_at(0.02) + CLEAN_BN,
                           "standard network, FGSM-RS at L∞ eps 0.02, clean batch-norm "
                           "statistics"),
    "standard_at_eps005": ("standard", _fgsm_at(0.05) + CLEAN_BN,
                           "standard network, FGSM-RS at L∞ eps 0.05, clean batch-norm "
                           "statistics"),
    "recipe_at_eps002": ("hah", RECIPE + _fgsm_at(0.02) + CLEAN_BN,
                         "robust recipe, FGSM-RS at L∞ eps 0.02, clean batch-norm statistics"),
    "recipe_at_eps005": ("hah", RECIPE + _fgsm_at(0.05) + CLEAN_BN,
                         "robust recipe, FGSM-RS at L∞ eps 0.05, clean batch-norm statistics"),
    "standard_noise_mix_s012": ("standard", _noise_mix(0.12),
                                "standard network, Gaussian noise sigma 0.12 on half of "
                                "each batch"),
    "standard_noise_mix_s05": ("standard", _noise_mix(0.5),
                               "standard network, Gaussian noise sigma 0.5 on half of "
                               "each batch"),
    "recipe_noise_mix_alpha0": ("hah", RECIPE + ["hah_alphas=0.0"] + NOISE_MIX,
                                "recipe_noise_mix without the HaH cost (alpha = 0)"),
    "recipe_x10": ("hah", RECIPE + ALPHAS_X10,
                   "robust recipe with the HaH cost's weights x10 the paper's"),
    "recipe_x100": ("hah", RECIPE + ALPHAS_X100,
                    "robust recipe with the HaH cost's weights x100 the paper's"),
    "recipe_l1_3e5": ("hah", RECIPE + _l1(3e-5),
                      "robust recipe with an L1 activity penalty 3e-5 on the HaH blocks"),
    "recipe_l1_1e4": ("hah", RECIPE + _l1(1e-4),
                      "robust recipe with an L1 activity penalty 1e-4 on the HaH blocks"),
    "recipe_l1_3e4": ("hah", RECIPE + _l1(3e-4),
                      "robust recipe with an L1 activity penalty 3e-4 on the HaH blocks"),
    # One strength leaves the first block at 38% non-zero (the second at
    # 2% at 3e-4): a stronger penalty on the first block only.
    "recipe_l1_b1_1e3": ("hah", _l1_blocks(1e-3, 1e-4),
                         "robust recipe with an L1 activity penalty 1e-3 on the first HaH "
                         "block, 1e-4 on the second"),
    "recipe_l1_b1_3e3": ("hah", _l1_blocks(3e-3, 1e-4),
                         "robust recipe with an L1 activity penalty 3e-3 on the first HaH "
                         "block, 1e-4 on the second"),
    "hah_soft_pgd_at": ("hah", ["block_options.threshold_mode=soft"] + PGD_AT + CLEAN_BN,
                        "HaH network with the continuous threshold, adversarially trained "
                        "(PGD-7, L∞ eps 0.1, clean batch-norm statistics)"),
    # The PGD-7 pair under the fix, both trained on one machine (study 6's
    # recipe_pgd_at ran on another, where the same seed trains other weights).
    "recipe_pgd_at_bnclean": ("hah", RECIPE + PGD_AT + CLEAN_BN,
                              "recipe_pgd_at with batch norm's moving statistics from the "
                              "clean batch"),
    "recipe_pgd_at_alpha0_bnclean": ("hah", RECIPE + ["hah_alphas=0.0"] + PGD_AT + CLEAN_BN,
                                     "recipe_pgd_at_bnclean without the HaH cost (alpha = 0)"),
}

#: name -> (base network, `--set` overrides, what it tests).
DEFENSES = {
    "standard_at": ("standard", FGSM_AT + ADVERSARIAL_BN,
                    "standard network, adversarially trained (FGSM with a random start, "
                    "L∞ eps 0.1)"),
    "standard_pgd_at": ("standard", PGD_AT + ADVERSARIAL_BN,
                        "standard network, adversarially trained (PGD-7, L∞ eps 0.1)"),
    "recipe_at": ("hah", RECIPE + FGSM_AT + ADVERSARIAL_BN,
                  "robust recipe (HaH without the threshold), adversarially trained "
                  "(FGSM with a random start, L∞ eps 0.1)"),
    "recipe_pgd_at": ("hah", RECIPE + PGD_AT + ADVERSARIAL_BN,
                      "robust recipe, adversarially trained (PGD-7, L∞ eps 0.1)"),
    "recipe_at_alpha0": ("hah", RECIPE + ["hah_alphas=0.0"] + FGSM_AT + ADVERSARIAL_BN,
                         "robust recipe without the HaH cost (alpha = 0), adversarially "
                         "trained (FGSM with a random start, L∞ eps 0.1)"),
    "hah_at": ("hah", FGSM_AT + ADVERSARIAL_BN,
               "HaH network, adversarially trained (FGSM with a random start, L∞ eps 0.1)"),
    "hah_pgd_at": ("hah", PGD_AT + ADVERSARIAL_BN,
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
    **FRONT,
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
    # The front (issue 36): the cost at matched training, sparse routes.
    ("recipe_pgd_at_bnclean", "recipe_pgd_at_alpha0_bnclean"),
    ("recipe_at_eps002", "standard_at_eps002"), ("recipe_at_eps005", "standard_at_eps005"),
    ("recipe_noise_mix", "recipe_noise_mix_alpha0"),
    ("recipe_l1_3e5", "hah_no_threshold"), ("recipe_l1_1e4", "hah_no_threshold"),
    ("recipe_l1_3e4", "hah_no_threshold"), ("hah_soft_pgd_at", "recipe_pgd_at"),
)
