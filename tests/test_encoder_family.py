"""Every encoder of the family keeps the same contract: (B, 1, 256, 32) → unit (B, d)."""

from pathlib import Path

import pytest
import torch

from engine.core.audio import SAMPLE_RATE
from engine.model.encoders import ENCODERS, EncoderConfig, build_encoder
from engine.model.encoders.attention import TemporalSpectralAttention
from engine.model.export import save_checkpoint
from engine.model.fingerprint import Fingerprinter
from engine.model.load import load_checkpoint
from engine.model.probe import min_cosine
from engine.model.torch_backend import load_torch
from tests.support.audio_files import music_like
from training.loss import nt_xent

# The smallest widths whose embedding still splits into d = 128 slices: small layers keep the
# tests fast.
WIDTH = {"scnn": 0.125, "attn_scnn": 0.125, "attn_resnet": 0.25}
TINY = 0.0625


def tiny(name: str, d: int = 64, projection: str = "divenc") -> torch.nn.Module:
    torch.manual_seed(0)
    width = WIDTH.get(name, TINY)
    return build_encoder(EncoderConfig(name=name, d=d, width=width, projection=projection))


@pytest.mark.parametrize("name", sorted(ENCODERS))
@pytest.mark.parametrize("projection", ["divenc", "fc"])
@pytest.mark.parametrize("d", [64, 128])
def test_shape_and_unit_norm(name: str, projection: str, d: int):
    z = tiny(name, d, projection).eval()(torch.randn(3, 1, 256, 32))
    assert z.shape == (3, d)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_deterministic_and_free_of_batch_coupling(name: str):
    model = tiny(name).eval()
    x = torch.randn(4, 1, 256, 32)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), model(x))
        torch.testing.assert_close(model(x[:1]), model(x)[:1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_checkpoint_round_trip(name: str, tmp_path: Path):
    config = EncoderConfig(name=name, d=64, width=WIDTH.get(name, TINY))
    model = tiny(name).eval()
    save_checkpoint(tmp_path / f"{name}.pt", model, config)
    loaded = load_torch(tmp_path / f"{name}.pt")
    assert loaded.config.name == name
    x = torch.randn(2, 1, 256, 32)
    torch.testing.assert_close(loaded.model(x), model(x))


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_the_engine_runs_every_family_as_torch_does(name: str, tmp_path: Path):
    """Each family is exported to ONNX on first use (or, if it cannot be, run on torch) and
    gives torch's float32 fingerprints."""
    config = EncoderConfig(name=name, d=64, width=WIDTH.get(name, TINY))
    save_checkpoint(tmp_path / f"{name}.pt", tiny(name).eval(), config)
    engine = Fingerprinter(load_checkpoint(tmp_path / f"{name}.pt"))
    exact = Fingerprinter(load_torch(tmp_path / f"{name}.pt"), precision="float32")
    audio = music_like(6.0, SAMPLE_RATE, 1)
    assert min_cosine(engine.audio(audio), exact.audio(audio)) >= 0.999


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_a_few_training_steps_lower_the_loss_on_a_fixed_batch(name: str):
    model = tiny(name).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(1)
    clean = torch.randn(8, 1, 256, 32)
    replica = clean + 0.3 * torch.randn_like(clean)
    losses = []
    for _ in range(5):
        loss = nt_xent(model(clean), model(replica), tau=0.05)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_attention_is_neutral_when_uniform_and_weights_average_one():
    attention = TemporalSpectralAttention()
    torch.nn.init.zeros_(attention.temporal.weight)
    torch.nn.init.zeros_(attention.spectral.weight)
    x = torch.randn(2, 1, 256, 32)
    torch.testing.assert_close(attention(x), x)  # equal scores: softmaxes uniform, map all ones
    torch.manual_seed(0)
    weights = TemporalSpectralAttention().weights(torch.randn(2, 1, 256, 32))
    torch.testing.assert_close(weights.mean(dim=(1, 2, 3)), torch.ones(2))
