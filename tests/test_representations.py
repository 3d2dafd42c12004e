"""Codes of every model that has them (gdm_engine.representations.encode) and the linear probe on
them: known answers on synthetic blobs, the choice of C on validation, and the digits."""

import pytest
import torch

from gdm_engine import data, models, representations

# model -> (tiny options, the width of its codes on the digits)
TINY = {
    "vae": ({"latent": 2, "hidden": 8, "iwae_samples": 1}, 2),
    "pixelcnn": ({"channels": 4, "layers": 2, "kernel_size": 3}, 4),
    "wavenet": ({"channels": 4, "layers": 2}, 4),
    "realnvp": ({"scales": 2, "couplings": 1, "hidden": 4}, 64),
    "glow": ({"scales": 2, "depth": 1, "hidden": 4}, 64),
    "nsf": ({"transforms": 1, "hidden": 8, "bins": 3}, 64),
    "ebm": ({"hidden": [8], "buffer_size": 4}, 8),
    "ddpm": ({"timesteps": 20, "width": 8, "multipliers": (1, 2), "blocks": 1}, 16),
    "gan": ({"width": 4, "latent": 4}, 128),  # 8 channels of 4 x 4 into the logit
}


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def _tiny(name, digits):
    options, _ = TINY[name]
    return models.get(name).for_data(digits, **options)


def test_every_model_but_the_pixels_is_encoded():
    assert set(representations.ENCODINGS) == set(TINY) == set(models.MODELS) - {"pixels"}


@pytest.mark.parametrize("name", TINY)
def test_codes_have_one_row_per_example_and_are_deterministic(name, digits):
    model = _tiny(name, digits).train()
    x = digits.test[:7]
    codes = representations.encode(model, x, batch_size=3)
    assert codes.shape == (7, TINY[name][1]) and codes.dtype == torch.float32
    assert torch.equal(codes, representations.encode(model, x, batch_size=3))
    torch.testing.assert_close(codes, representations.encode(model, x), rtol=1e-5, atol=1e-5)
    assert (codes.std(0) > 0).any()  # they tell the examples apart
    assert model.training  # its mode is restored
    assert representations.encoding_kind(model) == representations.ENCODINGS[name].description


def test_vae_codes_are_the_posterior_means(digits):
    vae = _tiny("vae", digits).eval()
    x = digits.test[:5]
    torch.testing.assert_close(representations.encode(vae, x), vae.encode(x)[0].detach())


def test_flow_codes_invert_to_the_cell_centres(digits):
    flow = _tiny("realnvp", digits).eval()
    x = digits.test[:5]
    z = representations.encode(flow, x).reshape(x.shape)
    with torch.no_grad():
        y, _ = flow.flow.inverse(z)
    torch.testing.assert_close(y, (x + 0.5) / digits.levels, rtol=1e-4, atol=1e-5)


def test_ebm_codes_are_its_hidden_layer_on_vectors():
    toy = data.load("8gaussians")
    ebm = models.EBM.for_data(toy, hidden=[5], buffer_size=4)
    x = toy.test[:6]
    first = ebm.network[0]
    expected = torch.nn.functional.silu(x @ first.weight.T + first.bias).detach()
    torch.testing.assert_close(representations.encode(ebm, x), expected)


def test_a_model_without_an_encoding_is_refused(digits):
    pixels = models.IndependentPixels.for_data(digits)
    with pytest.raises(ValueError, match="model 'pixels' has no encoding"):
        representations.encode(pixels, digits.test)


# ---- the linear probe -------------------------------------------------------------------------


def _blobs(n, generator, share=0.5, separation=8.0, features=5):
    """Two Gaussian blobs, class 1 (a `share` of n) shifted by `separation` in every feature."""
    labels = (torch.rand(n, generator=generator) < share).long()
    return torch.randn(n, features, generator=generator) + separation * labels[:, None], labels


def test_the_probe_separates_separable_blobs(generator):
    result = representations.linear_probe(
        *_blobs(200, generator), *_blobs(100, generator), *_blobs(100, generator)
    )
    # 8 standard deviations apart in 5 features: no point of 100 crosses the midway plane
    assert result["valid_accuracy"] == result["test_accuracy"] == 1.0


def test_the_probe_is_near_chance_on_labels_of_noise(generator):
    def noise(n):
        labels = torch.randint(0, 2, (n,), generator=generator)
        return torch.randn(n, 5, generator=generator), labels

    result = representations.linear_probe(*noise(200), *noise(200), *noise(2000))
    assert abs(result["test_accuracy"] - 0.5) < 0.06  # 2,000 test labels: sd 0.011


def test_C_is_chosen_on_validation(generator):
    """The strongest regularisation flattens the weights and predicts the training split's
    majority class (the intercept is not penalised); a weak one separates the classes. Which
    wins is the validation split's call."""
    train = _blobs(400, generator, share=0.1, separation=3.0, features=2)
    balanced = _blobs(200, generator, separation=3.0, features=2)
    test = _blobs(200, generator, separation=3.0, features=2)
    flat = representations.linear_probe(*train, *balanced, *test, Cs=(1e-6,))
    assert flat["valid_accuracy"] == (balanced[1] == 0).double().mean().item()
    for Cs in [(1e-6, 10), (10, 1e-6)]:
        chosen = representations.linear_probe(*train, *balanced, *test, Cs=Cs)
        assert chosen["C"] == 10 and chosen["valid_accuracy"] > 0.9
    all_majority = (balanced[0], torch.zeros_like(balanced[1]))
    chosen = representations.linear_probe(*train, *all_majority, *test, Cs=(10, 1e-6))
    assert chosen["C"] == 1e-6 and chosen["valid_accuracy"] == 1.0


@pytest.mark.parametrize(
    "change, name",
    [
        ({"valid_labels": torch.zeros(3, dtype=torch.long)}, "valid_labels"),
        ({"test_codes": torch.zeros(4, 3)}, "same number of features"),
        ({"train_codes": torch.zeros(4)}, "train_codes"),
        ({"train_labels": torch.zeros(4, dtype=torch.long)}, "two classes"),
        ({"Cs": ()}, "Cs"),
        ({"Cs": (1.0, -1.0)}, "Cs"),
    ],
)
def test_bad_probe_arguments_raise_value_errors_naming_them(change, name):
    codes, labels = torch.randn(4, 2), torch.tensor([0, 1, 0, 1])
    arguments = {
        **{f"{split}_codes": codes for split in ("train", "valid", "test")},
        **{f"{split}_labels": labels for split in ("train", "valid", "test")},
        **change,
    }
    with pytest.raises(ValueError, match=name):
        representations.linear_probe(**arguments)


# ---- on the digits ----------------------------------------------------------------------------


def test_the_pixel_probe_reads_the_digits(digits):
    result = representations.pixel_probe(digits)
    assert result["features"] == 64 and result["encoding"] == representations.PIXELS
    assert result["C"] in (0.01, 0.1, 1, 10, 100)
    assert result["test_accuracy"] > 0.85  # a linear classifier of the 64 levels


def test_probe_table_probes_the_models_codes(digits):
    result = representations.probe_table(_tiny("vae", digits), digits)
    assert result["features"] == 2 and result["encoding"] == representations.ENCODINGS["vae"].description
    assert 0 <= result["test_accuracy"] <= 1


def test_data_without_labels_are_refused(digits):
    unlabelled = data.Data("unlabelled", digits.train, digits.valid, digits.test, levels=17)
    with pytest.raises(ValueError, match="no class labels"):
        representations.pixel_probe(unlabelled)
