"""Backbones: images in [0, 1] -> A_fc, the features just before the logits layer.

The logits layer and Guided Dropout live in `trainer.AdversarialModel`, so every backbone here
ends at A_fc and the two stay apart. `sync_bn` makes batch norm use the statistics of the whole
global batch across replicas (keras' `synchronized=True`). Normalisation happens inside the
backbone (first layer), so attacks and epsilon always see raw pixels.

A builder takes (*, input_shape, mean, std, width=0, sync_bn=False) and, if it has them, its
own options (`depth`, `widen_factor`), where 0 means the architecture's published value.
"""
import inspect

import keras

from aalp_tf.errors import UsageError
from aalp_tf.registry import Registry

BACKBONES = Registry("model")


def _normalize(images, *, mean, std):
    if all(m == 0.0 for m in mean) and all(s == 1.0 for s in std):
        return images
    variance = [s * s for s in std]
    return keras.layers.Normalization(mean=list(mean), variance=variance, name="normalize")(images)


@BACKBONES.register("lenet")
def lenet(*, input_shape, mean, std, width=0, sync_bn=False):
    """LeNet-style network for MNIST, the width used in MNIST adversarial training (Madry et al.).

    conv 5x5 (w) + ReLU -> maxpool 2 -> conv 5x5 (2w) + ReLU -> maxpool 2 -> flatten ->
    dense 1024·(w/32) + ReLU = A_fc. Default w = 32: 32/64 filters and 1024 features, the
    "LeNet" of ALP's and Madry's MNIST experiments; the classic LeNet-5 (6/16 filters) lacks the
    capacity for eps=0.3 adversarial training. No batch norm (`sync_bn` has nothing to do).
    """
    width = width or 32
    images = keras.Input(shape=input_shape, name="images")
    h = _normalize(images, mean=mean, std=std)
    h = keras.layers.Conv2D(width, 5, padding="same", activation="relu", name="conv1")(h)
    h = keras.layers.MaxPooling2D(2, name="pool1")(h)
    h = keras.layers.Conv2D(2 * width, 5, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.MaxPooling2D(2, name="pool2")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    features = keras.layers.Dense(32 * width, activation="relu", name="fc")(h)
    return keras.Model(images, features, name="lenet")


def _conv_bn_relu(h, filters, *, name, strides=1, sync_bn=False):
    h = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                            name=f"{name}_conv")(h)
    h = keras.layers.BatchNormalization(synchronized=sync_bn, name=f"{name}_bn")(h)
    return keras.layers.ReLU(name=f"{name}_relu")(h)


@BACKBONES.register("resnet9")
def resnet9(*, input_shape, mean, std, width=0, sync_bn=False):
    """ResNet-9 for SVHN (the 9-layer residual network of fast CIFAR training, D. Page 2018).

    prep: conv-bn-relu (w) -> layer1: conv-bn-relu (2w) + maxpool 2 + residual of two
    conv-bn-relu (2w) -> layer2: conv-bn-relu (4w) + maxpool 2 -> layer3: conv-bn-relu (8w) +
    maxpool 2 + residual of two conv-bn-relu (8w) -> global max pool = A_fc (8w features).
    Default w = 64 (64/128/256/512 filters, 512 features).
    """
    width = width or 64
    images = keras.Input(shape=input_shape, name="images")
    h = _normalize(images, mean=mean, std=std)
    h = _conv_bn_relu(h, width, name="prep", sync_bn=sync_bn)
    for stage, (factor, residual) in enumerate([(2, True), (4, False), (8, True)], start=1):
        h = _conv_bn_relu(h, factor * width, name=f"layer{stage}", sync_bn=sync_bn)
        h = keras.layers.MaxPooling2D(2, name=f"layer{stage}_pool")(h)
        if residual:
            r = _conv_bn_relu(h, factor * width, name=f"layer{stage}_res1", sync_bn=sync_bn)
            r = _conv_bn_relu(r, factor * width, name=f"layer{stage}_res2", sync_bn=sync_bn)
            h = keras.layers.Add(name=f"layer{stage}_add")([h, r])
    features = keras.layers.GlobalMaxPooling2D(name="pool")(h)
    return keras.Model(images, features, name="resnet9")


def _basic_block(h, filters, *, strides, name, sync_bn):
    shortcut = h
    r = _conv_bn_relu(h, filters, strides=strides, name=f"{name}_a", sync_bn=sync_bn)
    r = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_b_conv")(r)
    r = keras.layers.BatchNormalization(synchronized=sync_bn, name=f"{name}_b_bn")(r)
    if strides != 1 or shortcut.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides=strides, use_bias=False,
                                       name=f"{name}_proj_conv")(shortcut)
        shortcut = keras.layers.BatchNormalization(synchronized=sync_bn,
                                                   name=f"{name}_proj_bn")(shortcut)
    h = keras.layers.Add(name=f"{name}_add")([shortcut, r])
    return keras.layers.ReLU(name=f"{name}_relu")(h)


@BACKBONES.register("resnet32")
def resnet32(*, input_shape, mean, std, width=0, sync_bn=False, blocks_per_stage=5):
    """ResNet-32 for CIFAR-10 (He et al. 2016, §4.2): 6n+2 layers with n = 5.

    conv 3x3 (w) -> 3 stages of n basic blocks (two 3x3 conv-bn, identity shortcut) with w, 2w,
    4w filters, the first block of stages 2 and 3 striding by 2 -> global average pool = A_fc
    (4w features). Default w = 16 (16/32/64 filters, 64 features). Where the shape changes the
    shortcut is a 1x1 conv + BN projection (He's option B) rather than zero padding.
    """
    width = width or 16
    images = keras.Input(shape=input_shape, name="images")
    h = _normalize(images, mean=mean, std=std)
    h = _conv_bn_relu(h, width, name="stem", sync_bn=sync_bn)
    for stage in range(3):
        for block in range(blocks_per_stage):
            strides = 2 if stage > 0 and block == 0 else 1
            h = _basic_block(h, width * 2 ** stage, strides=strides, name=f"s{stage}b{block}",
                             sync_bn=sync_bn)
    features = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    return keras.Model(images, features, name="resnet32")


# ---- the standard robust backbones of adversarial-training papers ---------------------------
# Batch norm as in their PyTorch reference implementations (momentum 0.1 there, 0.9 in Keras'
# convention; epsilon 1e-5), which the robust-training literature trained them with.


def _bn_relu(h, *, name, sync_bn):
    h = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=sync_bn,
                                        name=f"{name}_bn")(h)
    return keras.layers.ReLU(name=f"{name}_relu")(h)


def _conv(h, filters, *, kernel=3, strides=1, name):
    return keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                               name=name)(h)


def _preact_block(h, filters, *, strides, name, sync_bn):
    """He et al. (2016b)'s pre-activation block: BN-ReLU-conv twice, plus the shortcut. Where
    the shape changes, the shortcut is a 1x1 conv of the pre-activated input (both references
    do so)."""
    pre = _bn_relu(h, name=f"{name}_pre", sync_bn=sync_bn)
    shortcut = h
    if strides != 1 or h.shape[-1] != filters:
        shortcut = _conv(pre, filters, kernel=1, strides=strides, name=f"{name}_proj")
    r = _conv(pre, filters, strides=strides, name=f"{name}_conv1")
    r = _bn_relu(r, name=f"{name}_mid", sync_bn=sync_bn)
    r = _conv(r, filters, name=f"{name}_conv2")
    return keras.layers.Add(name=f"{name}_add")([shortcut, r])


def _preact_stack(images, stages, *, stem, mean, std, sync_bn, name):
    """stem conv -> stages of (filters, blocks, first stride) -> BN-ReLU -> global average pool."""
    h = _normalize(images, mean=mean, std=std)
    h = _conv(h, stem, name="stem_conv")
    for stage, (filters, blocks, strides) in enumerate(stages, start=1):
        for block in range(blocks):
            h = _preact_block(h, filters, strides=strides if block == 0 else 1,
                              name=f"s{stage}b{block}", sync_bn=sync_bn)
    h = _bn_relu(h, name="final", sync_bn=sync_bn)
    features = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    return keras.Model(images, features, name=name)


@BACKBONES.register("preact_resnet18")
def preact_resnet18(*, input_shape, mean, std, width=0, sync_bn=False):
    """PreActResNet-18 (He et al. 2016b), the CIFAR-10 model of Rice et al. (2020) and Wong et
    al. (2020): 3x3 conv (w) -> 4 stages of 2 pre-activation blocks with w, 2w, 4w, 8w filters,
    stages 2-4 striding by 2 -> BN-ReLU -> global average pool = A_fc (8w features). Default
    w = 64: 11.17 M parameters with a 10-class logits layer.
    """
    width = width or 64
    images = keras.Input(shape=input_shape, name="images")
    stages = [(width * 2 ** i, 2, 1 if i == 0 else 2) for i in range(4)]
    return _preact_stack(images, stages, stem=width, mean=mean, std=std, sync_bn=sync_bn,
                         name="preact_resnet18")


def wide_resnet_blocks(depth: int) -> int:
    """Blocks per stage of WRN-depth-k, by Zagoruyko & Komodakis' count: depth = 6n + 4."""
    if depth < 10 or (depth - 4) % 6:
        raise UsageError(f"wide_resnet needs depth = 6n + 4 with n >= 1 (e.g. 28 or 34); "
                         f"received: depth={depth}")
    return (depth - 4) // 6


@BACKBONES.register("wide_resnet")
def wide_resnet(*, input_shape, mean, std, width=0, sync_bn=False, depth=0, widen_factor=0):
    """Wide ResNet WRN-depth-k (Zagoruyko & Komodakis 2016), the CIFAR-10 model of Madry et al.
    (WRN-34-10), TRADES and Rice et al.: 3x3 conv (w) -> 3 stages of n = (depth - 4) / 6
    pre-activation blocks with w·k, 2w·k, 4w·k filters, stages 2-3 striding by 2 -> BN-ReLU ->
    global average pool = A_fc (4w·k features). Defaults: depth 34, k = 10, w = 16; 46.16 M
    parameters with a 10-class logits layer (WRN-28-10: 36.48 M). No dropout, as in the
    adversarial-training references.
    """
    width, depth, widen_factor = width or 16, depth or 34, widen_factor or 10
    if widen_factor < 1:
        raise UsageError(f"wide_resnet needs widen_factor >= 1; received: {widen_factor}")
    blocks = wide_resnet_blocks(depth)
    images = keras.Input(shape=input_shape, name="images")
    stages = [(width * widen_factor * 2 ** i, blocks, 1 if i == 0 else 2) for i in range(3)]
    return _preact_stack(images, stages, stem=width, mean=mean, std=std, sync_bn=sync_bn,
                         name=f"wide_resnet_{depth}_{widen_factor}")


OPTIONS = ("depth", "widen_factor")  # a backbone's own options: 0 means its published value


def check_options(name: str, **options) -> None:
    """Refuses an option (depth, widen_factor) the backbone `name` does not take, in one line."""
    takes = inspect.signature(BACKBONES.get(name)).parameters
    for option, value in options.items():
        if value and option not in takes:
            users = [n for n in BACKBONES.names()
                     if option in inspect.signature(BACKBONES.get(n)).parameters]
            raise UsageError(f"{option} applies to {', '.join(users) or 'no backbone'}, not to "
                             f"{name}; received: {option}={value}")


def build_backbone(name: str, *, input_shape, mean, std, width=0, sync_bn=False, **options):
    """The registered backbone `name`; its own options (depth, widen_factor) are passed only
    when set (non-zero), so backbones without them need not take them."""
    check_options(name, **options)
    chosen = {option: value for option, value in options.items() if value}
    return BACKBONES.get(name)(input_shape=input_shape, mean=mean, std=std, width=width,
                               sync_bn=sync_bn, **chosen)
