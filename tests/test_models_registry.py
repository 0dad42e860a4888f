"""The model registry: every model builds from its spec, satisfies the protocol and is
found again from the instance; overrides are strict."""

import inspect

import pytest

from ood_jax.errors import InvalidInputError, UnknownNameError
from ood_jax.models import GenerativeModel, ModelSpec, make_model, spec_of
from ood_jax.models import registry
from ood_jax.models.spec import default_objective

# A small image shape each model takes at its smoke preset (the DCGAN VAE needs 32 x 32).
SHAPES = {"vae": (32, 32, 1), "realnvp": (8, 8, 1), "glow": (8, 8, 1), "cv_glow": (8, 8, 3),
          "pixelcnnpp": (8, 8, 1), "gated_pixelcnn": (8, 8, 1), "uniform": (8, 8, 3),
          "vae_gaussian": (32, 32, 1), "gan_vae": (32, 32, 3), "ae": (32, 32, 1)}
# Not generative models (no log_prob / sample): scored by their reconstructions.
NOT_GENERATIVE = {"ae"}


def test_every_registered_model_is_covered():
  assert set(registry.known_models()) == set(SHAPES)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_builds_from_spec_and_round_trips(name):
  s = registry.spec(name)
  assert isinstance(s, ModelSpec) and s.name == name
  assert registry.model_presets(name)[:3] == ["smoke", "cpu", "paper"]
  model = make_model(name, "smoke", SHAPES[name])
  assert type(model) is s.module
  assert tuple(model.image_shape) == SHAPES[name]
  if name in NOT_GENERATIVE:
    assert not isinstance(model, GenerativeModel) and hasattr(model, "recon_error")
  else:
    assert isinstance(model, GenerativeModel)
    assert "temperature" in inspect.signature(type(model).sample).parameters
  assert spec_of(model) is s


def test_glow_and_cv_glow_share_a_class():
  glow, cv = make_model("glow", "smoke", (8, 8, 1)), make_model("cv_glow", "smoke", (8, 8, 1))
  assert type(glow) is type(cv)
  assert (spec_of(glow).name, spec_of(cv).name) == ("glow", "cv_glow")


def test_unregistered_module_has_no_spec():
  import flax.linen as nn

  class Toy(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      return x.sum()
  assert spec_of(Toy()) is None


def test_overrides_are_strict():
  assert make_model("realnvp", "smoke", (8, 8, 1), mask="cycle").mask == "cycle"
  assert make_model("vae", "smoke", (32, 32, 1), ngf=4).ngf == 4
  with pytest.raises(InvalidInputError, match="ngff") as e:
    make_model("vae", "smoke", (32, 32, 1), ngff=3)
  assert "ngf" in str(e.value).replace("ngff", "") and "latent_dim" in str(e.value)
  with pytest.raises(InvalidInputError, match="ngf"):
    make_model("vae", "smoke", (32, 32, 1), ngf="a")
  with pytest.raises(InvalidInputError, match="unknown field"):
    make_model("uniform", "smoke", (8, 8, 1), width=3)
  with pytest.raises(UnknownNameError, match="smoke, cpu, paper"):
    make_model("vae", "huge", (32, 32, 1))
  with pytest.raises(UnknownNameError, match="pixelcnnpp"):
    make_model("pixelcnn", "smoke", (8, 8, 1))
  with pytest.raises(InvalidInputError, match="H, W, C"):
    make_model("uniform", "smoke", (8, 8, 2))


def test_spec_fields_through_the_registry():
  assert registry.input_shape("vae", (28, 28, 1)) == (32, 32, 1)
  assert registry.input_shape("pixelcnnpp", (28, 28, 3)) == (28, 28, 3)
  assert registry.budget("pixelcnnpp", "cpu") == {"epochs": 0.5}
  assert registry.budget("vae", "cpu") == {}
  assert registry.train_defaults("vae") == {}
  assert registry.train_defaults("glow")["warmup_steps"] > 0
  assert registry.spec("vae").batchnorm_parts == ("encoder", "decoder")
  # PixelCNN++ keeps batch statistics only with norm='batch'; weight norm gets dropout 0.5.
  s = registry.spec("pixelcnnpp")
  weight = make_model("pixelcnnpp", "smoke", (8, 8, 1), norm="weight")
  assert s.uses_batchnorm(make_model("pixelcnnpp", "smoke", (8, 8, 1)))
  assert not s.uses_batchnorm(weight) and weight.dropout_rate == 0.5
  assert not registry.spec("uniform").uses_batchnorm()


def test_register_model_is_one_line():
  registry.register_model("vae_copy", "ood_jax.models.vae:SPEC")
  try:
    assert "vae_copy" in registry.known_models()
    assert make_model("vae_copy", "smoke", (32, 32, 3)).latent_dim == 16
  finally:
    registry._MODELS.unregister("vae_copy")


def test_objectives_come_from_the_spec():
  from ood_jax.scores import per_sample_grads as psg
  vae = make_model("vae", "smoke", (32, 32, 1))
  assert psg.objective_for(vae).per_image
  flow = make_model("realnvp", "smoke", (8, 8, 1))
  assert not psg.objective_for(flow).per_image
  assert registry.spec("realnvp").objective is default_objective
