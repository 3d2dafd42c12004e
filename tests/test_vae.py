"""The VAE: it beats the independent-pixel baseline on digits, its IWAE bound is the formula of
Burda et al., its loss is the negative ELBO, and its samples look like the data."""

import math

import pytest
import torch

from gdm_engine import data, metrics, train
from gdm_engine.models import VAE
from gdm_engine.models.vae import discretized_logistic_log_probs
from gdm_engine.reference.gaussian_reparam_kl import standard_normal_like


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def test_vae_beats_the_independent_pixel_baseline_on_digits(digits, tmp_path):
    trainer = train.Trainer(train.build_model("vae", digits), digits,
                            train.TrainConfig(steps=300, eval_every=300), out=str(tmp_path))
    results = trainer.fit()
    baseline = metrics.independent_pixel_bits_per_dim(digits)
    print(f"VAE {results['bits_per_dim']:.4f} bits/dim, baseline {baseline:.4f}")
    assert results["bits_per_dim"] < baseline - 0.1


def _posterior_terms(model, x, eps):
    """log p(x|z) + log p(z) - log q(z|x) by torch.distributions, for noise eps (K, N, latent),
    for a VAE with the categorical decoder."""
    mean, log_var = model.encode(x)
    q = torch.distributions.Normal(mean, (0.5 * log_var).exp())
    z = mean + (0.5 * log_var).exp() * eps
    logits = model.decoder(z).unflatten(-1, (model.dims, model.levels))
    decoder = torch.distributions.Categorical(logits=logits)
    log_px = decoder.log_prob(x.reshape(len(x), -1)).sum(-1)
    prior = torch.distributions.Normal(0.0, 1.0)
    return log_px + prior.log_prob(z).sum(-1) - q.log_prob(z).sum(-1)


def test_log_prob_is_the_importance_weighted_bound(digits):
    model = VAE.for_data(digits, latent=4, hidden=32, decoder="categorical")
    x = digits.test[:5]
    got = model.log_prob(x, samples=7, generator=torch.Generator().manual_seed(1))
    eps = torch.randn((7, 5, 4), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = torch.logsumexp(_posterior_terms(model, x, eps), 0) - math.log(7)
    assert torch.allclose(got, want, rtol=1e-5)


def test_log_prob_in_chunks_of_samples_is_the_same_bound(digits, monkeypatch):
    from gdm_engine.models import vae

    model = VAE.for_data(digits, latent=4, hidden=32)
    x = digits.test[:6]
    whole = model.log_prob(x, samples=10, generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(vae, "EVAL_CHUNK_VALUES", 3 * len(x) * model.dims * 17)  # 3 at a time
    rows = []
    model.decoder.register_forward_hook(lambda module, args, out: rows.append(out[..., 0].numel()))
    chunked = model.log_prob(x, samples=10, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(chunked, whole, rtol=1e-6)
    assert max(rows) == 3 * len(x)  # the decoder never saw more than 3 samples at once


def test_the_bound_tightens_with_more_samples(digits):
    model = VAE.for_data(digits, latent=4, hidden=32)
    # A decoder that depends strongly on z puts q(z|x) far from the posterior and the bounds far
    # apart: at the random initialisation they differ by less than the ELBO estimate's noise.
    with torch.no_grad():
        model.decoder[0].weight.mul_(20)
    x = digits.test[:64]
    g = torch.Generator().manual_seed(0)
    elbo, iwae = (model.log_prob(x, samples=k, generator=g).mean() for k in (1, 256))
    assert iwae > elbo + 1


def test_loss_is_the_negative_elbo_at_the_ops_noise(digits):
    model = VAE.for_data(digits, latent=4, hidden=32, decoder="categorical")
    x = digits.train[:16]
    loss = model.loss(x, generator=torch.Generator().manual_seed(3))
    # the reference op draws its noise from a seed that it takes from the generator
    seed = int(torch.randint(0, 2**31 - 1, (), generator=torch.Generator().manual_seed(3)))
    with torch.no_grad():
        mean, log_var = model.encode(x)
        q = torch.distributions.Normal(mean, (0.5 * log_var).exp())
        z = q.loc + q.scale * standard_normal_like(mean, seed)
        logits = model.decoder(z).unflatten(-1, (model.dims, model.levels))
        log_px = torch.distributions.Categorical(logits=logits).log_prob(x.reshape(16, -1)).sum(-1)
        kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1)
        want = (kl - log_px).mean()  # Kingma & Welling (2014), eq. 10, one sample of z
    assert loss.requires_grad and loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_discretised_logistic_is_the_mass_of_logistic_bins():
    location, log_scale = torch.tensor([[-0.3, 0.9]]), torch.tensor([[-1.5, -3.0]])
    log_probs = discretized_logistic_log_probs(location, log_scale, 5).double()
    assert log_probs.shape == (1, 2, 5)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(1, 2, dtype=torch.float64))
    # levels 0..4 sit at -1, -0.5, 0, 0.5, 1; level 2 is the bin (-0.25, 0.25)
    logistic = lambda v: torch.sigmoid((v - location.double()) / log_scale.double().exp())  # noqa: E731
    want = logistic(torch.tensor(0.25)) - logistic(torch.tensor(-0.25))
    assert torch.allclose(log_probs[..., 2].exp(), want, rtol=1e-5)
    assert torch.allclose(log_probs[..., 0].exp(), logistic(torch.tensor(-0.75)), rtol=1e-5)
    assert torch.allclose(log_probs[..., 4].exp(), 1 - logistic(torch.tensor(0.75)), rtol=1e-4)


def test_discretised_logistic_keeps_far_bins_finite_with_gradients():
    location = torch.tensor([[-1.0]], requires_grad=True)
    log_scale = torch.tensor([[-7.0]], requires_grad=True)
    log_probs = discretized_logistic_log_probs(location, log_scale, 17)
    assert torch.isfinite(log_probs).all() and log_probs[0, 0, -1] < -1000  # far from -1
    log_probs[0, 0, -1].backward()
    assert torch.isfinite(location.grad).all() and location.grad.item() > 0
    assert torch.isfinite(log_scale.grad).all()


@pytest.mark.parametrize("decoder", ["logistic", "categorical"])
def test_samples_are_images_of_levels(digits, decoder):
    model = VAE.for_data(digits, decoder=decoder)
    samples = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, 1, 8, 8) and samples.dtype == torch.int64
    assert samples.min() >= 0 and samples.max() < 17
    again = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(samples, again)


def test_gaussian_decoder_on_continuous_data():
    moons = data.load("moons")
    model = VAE.for_data(moons, latent=2, hidden=16)
    assert torch.isfinite(model.loss(moons.train[:32]))
    assert model.log_prob(moons.test[:8]).shape == (8,)
    assert model.sample(3).shape == (3, 2)


def test_discretised_logistic_keeps_its_mass_at_huge_scales():
    # log_scale 12 once spread the logistic so wide that the ±1e4 stand-ins cut off 30% of it
    log_probs = discretized_logistic_log_probs(torch.zeros(1, 3), torch.full((1, 3), 12.0), 17)
    assert torch.allclose(log_probs.double().exp().sum(-1), torch.ones(1, 3, dtype=torch.float64),
                          atol=1e-4)


def test_dropout_regularises_training_only(digits):
    torch.manual_seed(0)
    model = VAE(shape=(1, 8, 8), levels=17, dropout=0.5)
    x = digits.train[:16]
    model.train()
    assert not torch.equal(model.encode(x)[0], model.encode(x)[0])  # units dropped at random
    model.eval()
    assert torch.equal(model.encode(x)[0], model.encode(x)[0])
    assert model.config["dropout"] == 0.5


@pytest.mark.parametrize("option, value", [("latent", 0), ("hidden", 2.5), ("iwae_samples", "x"),
                                           ("decoder", "bernoulli"), ("samples", 0),
                                           ("dropout", 1.0), ("dropout", "x")])
def test_bad_options_raise_naming_them(option, value):
    with pytest.raises((ValueError, TypeError), match=option):
        if option == "samples":
            VAE(shape=(4,), levels=3).log_prob(torch.zeros(2, 4, dtype=torch.long), samples=0)
        else:
            VAE(shape=(4,), levels=3, **{option: value})
    with pytest.raises(ValueError, match="needs discrete data"):
        VAE(shape=(2,), levels=None, decoder="categorical")
