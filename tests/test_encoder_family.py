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
from training.warm_start import narrowed_state

# The smallest widths whose embedding still splits into d = 128 slices: small layers keep the
# tests fast.
WIDTH = {"scnn": 0.125, "scnn_lite": 0.125, "attn_scnn": 0.125, "attn_resnet": 0.25}
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


def test_scnn_lite_is_scnn_with_half_the_first_blocks_channels():
    full, lite = tiny("scnn"), tiny("scnn_lite")
    assert [b.conv_f.out_channels for b in full.front][:2] == [16, 16]
    assert [b.conv_f.out_channels for b in lite.front][:2] == [8, 16]
    rest = [b.conv_f.out_channels for b in full.front][1:]
    assert [b.conv_f.out_channels for b in lite.front][1:] == rest


def test_narrowing_scnn_into_scnn_lite_keeps_the_strongest_channels_and_copies_the_rest():
    source, target = tiny("scnn"), tiny("scnn_lite")
    first = source.front[0]
    with torch.no_grad():  # the first layer's channels 8-15 carry something, the second's evens
        first.norm_t.norm.weight.copy_(torch.tensor([0.0] * 8 + [1.0] * 8))
        first.norm_f.norm.weight.copy_(torch.tensor([1.0, 0.0] * 8))
    target.load_state_dict(narrowed_state(source, target))
    narrowed, whole = target.state_dict(), source.state_dict()
    assert torch.equal(narrowed["front.0.conv_t.weight"], whole["front.0.conv_t.weight"][8:])
    assert torch.equal(narrowed["front.0.norm_t.norm.bias"], whole["front.0.norm_t.norm.bias"][8:])
    assert torch.equal(
        narrowed["front.0.conv_f.weight"], whole["front.0.conv_f.weight"][0::2][:, 8:]
    )
    assert torch.equal(narrowed["front.0.norm_f.norm.bias"], whole["front.0.norm_f.norm.bias"][::2])
    assert torch.equal(narrowed["front.1.conv_t.weight"], whole["front.1.conv_t.weight"][:, 0::2])
    untouched = [k for k in whole if not k.startswith("front.0.") and k != "front.1.conv_t.weight"]
    assert untouched and all(torch.equal(narrowed[k], whole[k]) for k in untouched)
