import keras
import numpy as np
import pytest

from aalp_tf.errors import UsageError
from aalp_tf.models import BACKBONES, build_backbone, check_options


def build(name, shape=(32, 32, 3), width=0):
    return BACKBONES.get(name)(input_shape=shape, mean=(0.5,) * shape[-1],
                               std=(0.25,) * shape[-1], width=width)


@pytest.mark.parametrize("name,shape,features", [("lenet", (28, 28, 1), 1024),
                                                 ("resnet9", (32, 32, 3), 512),
                                                 ("resnet32", (32, 32, 3), 64),
                                                 ("preact_resnet18", (32, 32, 3), 512),
                                                 ("wide_resnet", (32, 32, 3), 640)])
def test_published_widths_end_at_a_flat_feature_vector(name, shape, features):
    backbone = build(name, shape)
    assert backbone.output_shape == (None, features)
    assert not any(isinstance(layer, keras.layers.Dense) and layer.name == "logits"
                   for layer in backbone.layers)


def test_resnet32_is_6n_plus_2_layers_with_he_et_al_filters():
    backbone = build("resnet32")
    convs = [l for l in backbone.layers if isinstance(l, keras.layers.Conv2D)
             and "proj" not in l.name]
    assert len(convs) == 31  # + the logits layer = 32 weighted layers
    assert [c.filters for c in convs] == [16] + [16] * 10 + [32] * 10 + [64] * 10
    # He et al. report 0.46M parameters for ResNet-32 (our 1x1 projections add ~3k).
    assert 0.46e6 < backbone.count_params() + 64 * 10 + 10 < 0.48e6


def test_normalisation_happens_inside_the_model():
    backbone = build("resnet9", width=4)
    assert backbone.get_layer("normalize") is not None
    mnist = BACKBONES.get("lenet")(input_shape=(28, 28, 1), mean=(0.0,), std=(1.0,), width=4)
    assert all(l.name != "normalize" for l in mnist.layers)


@pytest.mark.parametrize("name", BACKBONES.names())
def test_width_scales_the_filters(name):
    shape = (28, 28, 1) if name == "lenet" else (32, 32, 3)
    small = build(name, shape, width=4)
    out = small(np.zeros((2, *shape), np.float32))
    assert out.shape[0] == 2 and small.count_params() < build(name, shape).count_params() / 10


def trainable_with_logits(backbone, classes=10):
    """Trainable parameters of backbone + a `classes`-way logits layer (what the reference
    implementations count: batch norm's scale and offset, not its moving statistics)."""
    features = backbone.output_shape[-1]
    return sum(int(np.prod(v.shape)) for v in backbone.trainable_weights) + features * classes \
        + classes


@pytest.mark.parametrize("name,options,expected", [
    # Rice et al.'s PreActResNet18 (pre-activation blocks, a final BN-ReLU before the pool):
    # 11,172,170; kuangliu's CIFAR version, without the final BN, has 1,024 fewer.
    ("preact_resnet18", {}, 11_172_170),
    # Zagoruyko & Komodakis' WRN as Madry et al., TRADES and Rice et al. train it.
    ("wide_resnet", {}, 46_160_474),  # WRN-34-10
    ("wide_resnet", {"depth": 28}, 36_479_194),  # WRN-28-10
])
def test_standard_robust_backbones_have_the_reference_parameter_counts(name, options, expected):
    backbone = build_backbone(name, input_shape=(32, 32, 3), mean=(0.5,) * 3, std=(0.25,) * 3,
                              **options)
    assert trainable_with_logits(backbone) == expected


def test_wide_resnet_options_are_checked_in_one_line():
    with pytest.raises(UsageError) as err:
        BACKBONES.get("wide_resnet")(input_shape=(32, 32, 3), mean=(0.5,) * 3,
                                     std=(0.25,) * 3, depth=30)
    assert str(err.value) == ("wide_resnet needs depth = 6n + 4 with n >= 1 (e.g. 28 or 34); "
                              "received: depth=30")
    with pytest.raises(UsageError) as err:
        check_options("lenet", depth=34, widen_factor=0)
    assert str(err.value) == "depth applies to wide_resnet, not to lenet; received: depth=34"
    check_options("wide_resnet", depth=16, widen_factor=4)  # accepted
    small = build_backbone("wide_resnet", input_shape=(32, 32, 3), mean=(0.5,) * 3,
                           std=(0.25,) * 3, width=2, depth=10, widen_factor=2)
    assert small.output_shape == (None, 16)  # 4 * width * k
    kernels = [layer.kernel_size for layer in small.layers
               if isinstance(layer, keras.layers.Conv2D)]
    # WRN-10-2: the stem, 3 stages of 1 block of two 3x3 convs, a 1x1 projection per stage.
    assert (kernels.count((3, 3)), kernels.count((1, 1))) == (1 + 3 * 1 * 2, 3)
