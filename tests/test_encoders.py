import pytest
import torch

from engine.model.encoders import EncoderConfig, build_encoder, count_parameters
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
