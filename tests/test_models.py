import keras
import numpy as np
import pytest

from aalp_tf.models import BACKBONES


def build(name, shape=(32, 32, 3), width=0):
    return BACKBONES.get(name)(input_shape=shape, mean=(0.5,) * shape[-1],
                               std=(0.25,) * shape[-1], width=width)


@pytest.mark.parametrize("name,shape,features", [("lenet", (28, 28, 1), 1024),
                                                 ("resnet9", (32, 32, 3), 512),
                                                 ("resnet32", (32, 32, 3), 64)])
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
