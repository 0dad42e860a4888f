"""The experiment catalogue: every paper table or figure we reproduce, with its command.

``python -m ood_jax.experiments`` lists it; ``python -m ood_jax.experiments.reproduce`` runs
it. An entry names an experiment module (``ood_jax.experiments.<module>``, which defines
``EXPERIMENT``) and the flags of its default command; the preset, output and checkpoint
flags are added by whoever runs it. New experiments register one ``Entry`` here.
"""

from __future__ import annotations

import dataclasses
import importlib
import shlex

from ood_jax.registry import Registry

PAPERS = {
    "song": "Song et al., OOD detection with batch normalization",
    "kirichenko": "Kirichenko et al., Why normalizing flows fail to detect OOD data",
    "nalisnick": "Nalisnick et al., Do deep generative models know what they don't know?",
    "chen": "Chen, Towards understanding ID and OOD with deep generative models",
    "rose": "Choi et al., ROSE",
}


@dataclasses.dataclass(frozen=True)
class Entry:
  """One catalogue entry: ``python -m ood_jax.experiments.<module> <args>`` reproduces
  ``item`` of ``paper`` (a key of ``PAPERS``)."""
  name: str
  module: str
  paper: str
  item: str
  args: tuple[str, ...] = ()
  about: str = ""

  @property
  def command(self) -> str:
    return " ".join(["python", "-m", f"ood_jax.experiments.{self.module}",
                     *map(shlex.quote, self.args)])

  def experiment(self):
    """The module's ``EXPERIMENT`` (imports the module)."""
    return importlib.import_module(f"ood_jax.experiments.{self.module}").EXPERIMENT


CATALOGUE = Registry("experiment")


def register(entry: Entry) -> Entry:
  if entry.paper not in PAPERS:
    raise ValueError(f"catalogue entry {entry.name!r}: unknown paper {entry.paper!r}.")
  return CATALOGUE.register(entry.name, entry)


def entries(paper: str | None = None) -> list[Entry]:
  """Every entry (of ``paper`` only, if given), in registration order."""
  return [e for _, e in CATALOGUE.items() if paper is None or e.paper == paper]


ROSE_SCORES = "nll,rose,likelihood_regret,likelihood_ratio,input_complexity"

for _e in [
    Entry("song_table1", "table1", "song", "Table 1",
          about="bits/dim in eval vs BatchNorm train mode, and the mean Delta"),
    Entry("song_table2", "table2", "song", "Table 2",
          ("--models", "vae,realnvp", "--scores", "nll,t_perm,waic,bn_mixed"),
          about="AUROC of NLL, T_perm, WAIC and the mixed-batch Delta"),
    Entry("song_table5", "table5", "song", "Table 5",
          about="Delta's AUROC as the second test ratio r2 varies"),
    Entry("rose_table1", "rose_brightness", "rose", "Table 1 (§3.2)",
          ("--id", "cifar10", "--ood-base", "celeb_a"),
          about="CIFAR-10 VAE vs CelebA at brightness 0.2 .. 1.8: AUROC per factor, mean/std"),
    Entry("song_toys", "song_toys", "song", "§3 Fig. 1 (right); §4.2.1 Fig. 2, App. D",
          about="the 1-D mis-specification and 2-D BatchNorm-coupling toys"),
    Entry("song_fig3", "song_ratio", "song", "Fig. 3", ("--models", "vae,realnvp"),
          about="average bits/dim against the ratio r of test samples in the batch"),
    Entry("song_batch_test", "song_batch_test", "song", "§6 (batch-level test)",
          about="permutation test over whole batches of eval-mode mean bits/dim, b = 64"),
    Entry("song_table4", "song_tempered", "song", "App. B, Figs 4-5, Table 4",
          about="T_perm fooled by tempered samples of a model trained on another set; BN tests beside"),
    Entry("rose_table2", "table2", "rose", "Table 2",
          ("--scores", ROSE_SCORES, "--ood", "mnist,noise,constant,rotation,overall"),
          about="ROSE vs Likelihood Regret, Likelihood Ratio, Input Complexity"),
    Entry("rose_table3", "rose_capacity", "rose", "§5.2, Table 3",
          about="ROSE AUROC per OOD set as the VAE width is scaled x0.5 / 1 / 2 / 4"),
    Entry("rose_fig6", "rose_layerwise", "rose", "App. D, Fig. 6",
          about="layer-wise ROSE (DIAG) AUROC vs layer: basic CNN, VGG-11/13/16/19, ResNet-18"),
    Entry("rose_ablations", "rose_ablations", "rose", "Tables 6-7, Fig. 5",
          ("--models", "vae,glow"),
          about="DIAG vs EKFAC, InvConv vs all layers (Glow), Fisher sample count"),
    Entry("rose_runtime", "runtime", "rose", "runtime comparison",
          about="images per second of every score"),
    Entry("kirichenko_table1", "kirichenko_table1", "kirichenko", "App. F, Table 1, Fig. 6",
          about="baseline NLL AUROC (%) of RealNVP and Glow per train -> OOD pair"),
    Entry("kirichenko_latents", "kirichenko_latents", "kirichenko", "§3, Figs 2, 8",
          about="un-squeezed latents, their 40-draw average, train-mode BatchNorm latents"),
    Entry("kirichenko_couplings", "kirichenko_couplings", "kirichenko", "§4, Figs 1, 3, 9, 11",
          about="coupling inputs, outputs, s and -t in image space; prediction MSE ID vs OOD"),
    Entry("kirichenko_masks", "kirichenko_masks", "kirichenko", "App. K, L.1, Figs 12-13",
          about="checkerboard vs horizontal vs cycle masks, 8-coupling single-scale RealNVP"),
    Entry("kirichenko_bottleneck", "kirichenko_bottleneck", "kirichenko", "App. K, L, Figs 10, 14",
          about="st-net bottleneck l vs the skip-free baseline"),
    Entry("kirichenko_negative", "kirichenko_negative", "kirichenko", "App. D, Eq. 6, Fig. 5",
          about="negative training: maximise the ID likelihood, minimise an OOD set's"),
    Entry("kirichenko_resample", "kirichenko_resample", "kirichenko", "App. M, Figs 15-16",
          about="re-sample the latents of a centre square; baseline samples"),
    Entry("kirichenko_embeddings", "kirichenko_embeddings", "kirichenko", "App. N-O, Table 2(a)",
          about="RealNVP on classifier features (stand-in for EfficientNet): NLL AUROC"),
    Entry("nalisnick_bpd", "nalisnick_bpd", "nalisnick", "Fig. 1, Figs 2-3, App. E Fig. 8",
          about="bits/dim of ID train, ID test, OOD, noise and constant images; histograms"),
    Entry("nalisnick_decomposition", "nalisnick_decomposition", "nalisnick", "§4, Fig. 4a-c",
          about="log p(z) and the volume term separately; CV-Glow's constant volume"),
    Entry("nalisnick_second_order", "nalisnick_second_order", "nalisnick", "§5, Eqs. 4-6, App. G",
          about="the second-order prediction of the likelihood gap from data variances"),
    Entry("nalisnick_statistics", "nalisnick_statistics", "nalisnick", "Fig. 5a, App. H Fig. 10",
          about="histograms of per-dimension means and variances of every set"),
    Entry("nalisnick_graying", "nalisnick_graying", "nalisnick", "Fig. 5b, App. I Fig. 12",
          about="likelihood of ID and OOD as the colour is shrunk towards grey"),
    Entry("nalisnick_codes", "nalisnick_codes", "nalisnick", "App. H, Figs 11-12",
          about="CV-Glow code statistics ID vs OOD"),
    Entry("nalisnick_training_curves", "nalisnick_training_curves", "nalisnick", "Fig. 4d",
          about="bits/dim of ID train, test and OOD at every checkpoint"),
    Entry("nalisnick_ensemble", "nalisnick_ensemble", "nalisnick", "App. F, Fig. 9",
          about="ensemble predictive likelihood of M Glows"),
    Entry("nalisnick_asymmetry", "nalisnick_asymmetry", "nalisnick", "App. B, Fig. 6",
          about="the reverse direction: Glow trained on MNIST / SVHN / CelebA scores the other set"),
    Entry("nalisnick_dimension", "nalisnick_dimension", "nalisnick", "App. C-D, Eqs. 7-9, Fig. 7",
          about="two moons replicated to D <= 100: log p(z) and log-det vs D, exp vs sigmoid scales"),
    Entry("chen_backbones", "chen_backbones", "chen", "3.3.4, Figs 3.3-3.6",
          about="AE, VAE (categorical and Gaussian decoders) and GAN-VAE: ID vs OOD likelihood"),
    Entry("chen_bn_adaptation", "chen_bn_adaptation", "chen", "3.3.5, Fig. 3.7",
          about="BatchNorm train mode in the encoder, the decoder or both"),
    Entry("chen_elbo_components", "chen_elbo_components", "chen", "3.3.6, Eqs. 3.1-3.4, Fig. 3.8",
          about="the ELBO's three terms and their reduced forms, ID vs OOD"),
    Entry("chen_latent_svm", "chen_latent_svm", "chen", "3.3.7, Table 3.1, Figs 3.9-3.11",
          about="linear SVM on encoder means: held-out Pos./Neg. accuracy, t-SNE, normal walk"),
]:
  register(_e)
