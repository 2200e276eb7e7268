import pytest
import torch
import torch.nn.functional as F

from engine.model.encoders import EncoderConfig, build_encoder, count_parameters
from engine.model.encoders.export_forms import channel_layer_norm, elu_by_exp
from engine.model.encoders.heads import DivideAndEncode
from engine.model.encoders.scnn import scaled_channels


def test_full_width_matches_the_paper():
    model = build_encoder(EncoderConfig(d=128, width=1.0))
    assert scaled_channels(1.0)[-1] == 1024
    assert 14e6 < count_parameters(model) < 17e6  # the paper reports ≈16.9 M


def test_divide_and_encode_slices_are_independent():
    torch.manual_seed(0)
    head = DivideAndEncode(h=8, d=4)
    h = torch.randn(1, 8)
    changed = h.clone()
    changed[0, 0:2] += 1.0  # only slice 0's inputs
    diff = (head(h) - head(changed)).abs()[0]
    assert diff[0] > 0 and torch.all(diff[1:] == 0)


def test_unknown_encoder_is_named():
    with pytest.raises(ValueError, match="nope"):
        build_encoder(EncoderConfig(name="nope"))


def test_the_export_forms_give_the_eager_values():
    """The export's layer norm and ELU (engine.model.encoders.export_forms) against torch's."""
    torch.manual_seed(0)
    x = 3 * torch.randn(4, 48, 17, 5) + 0.5
    norm = torch.nn.LayerNorm(48)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    with torch.no_grad():
        eager = norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        exported = channel_layer_norm(x, norm.weight, norm.bias, norm.eps)
    torch.testing.assert_close(exported, eager, atol=2e-6, rtol=1e-5)
    edges = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8, -20.0, -200.0, 80.0, 200.0,
                          float("inf"), float("-inf")])  # fmt: skip
    for values in (x, edges):
        torch.testing.assert_close(elu_by_exp(values), F.elu(values), atol=1e-7, rtol=2e-7)
