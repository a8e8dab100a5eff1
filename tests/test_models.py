"""slth.models: registry, shapes, width multiplier."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slth.models import MODELS, build_model

SHAPES = {"fc": (1, 28, 28), "conv2": (1, 28, 28), "conv4": (1, 28, 28), "conv6": (3, 32, 32),
          "lenet5": (1, 28, 28), "resnet20": (3, 32, 32), "conv8": (3, 32, 32), "vit": (1, 8, 8)}


def _weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))


@pytest.mark.parametrize("name", sorted(set(MODELS) - {"gpt"}))  # gpt (token ids -> (N, T, V)): test_gpt.py
@pytest.mark.parametrize("width", [0.5, 1.0])
def test_forward_shape(name, width):
    model = build_model(name, SHAPES[name], 10, width=width)
    assert model(torch.zeros(2, *SHAPES[name])).shape == (2, 10)
    assert all(getattr(m, "bias", None) is None for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))


def test_known_sizes():
    assert _weights(build_model("fc", (1, 28, 28), 10)) == 784 * 300 + 300 * 100 + 100 * 10
    lenet = build_model("lenet5", (1, 28, 28), 10)
    assert [m.in_features for m in lenet.modules() if isinstance(m, nn.Linear)] == [400, 120, 84]
    assert _weights(build_model("fc", (1, 8, 8), 10, hidden=(7,))) == 64 * 7 + 7 * 10


def test_width_multiplier_scales_hidden_layers_only():
    wide = build_model("fc", (1, 28, 28), 10, width=2)
    sizes = [m.out_features for m in wide.modules() if isinstance(m, nn.Linear)]
    assert sizes == [600, 200, 10]
    conv = build_model("conv4", (1, 28, 28), 10, width=2)
    assert [m.out_channels for m in conv.modules() if isinstance(m, nn.Conv2d)] == [128, 128, 256, 256]


def test_bad_names_and_widths():
    with pytest.raises(ValueError) as err:
        build_model("vgg19", (1, 28, 28), 10)
    for name in MODELS:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="width"):
        build_model("fc", (1, 28, 28), 10, width=0)


def test_gpt_and_vit_refuse_input_shapes_they_cannot_take():
    with pytest.raises(ValueError, match=r"GPT: the input shape is \(context,\), token ids; got \(1, 28, 28\)"):
        build_model("gpt", (1, 28, 28), 10)
    with pytest.raises(ValueError, match="ViT: the patch size 5 must divide the image size 28x28"):
        build_model("vit", (1, 28, 28), 10, patch=5)


def test_a_bool_model_argument_takes_only_yes_no_words():
    from slth.models import check_model_args

    assert check_model_args("gpt", {"tie": "Yes"}) == (("tie", True),)
    assert check_model_args("gpt", {"tie": "0"}) == (("tie", False),)
    with pytest.raises(ValueError, match=r"model argument tie='maybe' of gpt: expected bool"):
        check_model_args("gpt", {"tie": "maybe"})


def test_a_registry_out_of_step_with_its_names_is_refused():
    from slth._names import check_registry

    check_registry("model", dict.fromkeys(("a", "b")), ("a", "b"))
    with pytest.raises(RuntimeError, match=r"the model registry holds \('b', 'a'\) but slth._names lists \('a', 'b'\)"):
        check_registry("model", dict.fromkeys(("b", "a")), ("a", "b"))


def test_model_arguments_of_an_unknown_model_are_refused():
    from slth.models import check_model_args

    with pytest.raises(ValueError, match="unknown model 'vgg'; valid names: .*lenet5"):
        check_model_args("vgg", {"depth": 2})
