"""Backbones: images in [0, 1] -> A_fc, the features just before the logits layer.

The logits layer and Guided Dropout live in `trainer.AdversarialModel`, so every backbone here
ends at A_fc and the two stay apart. `sync_bn` makes batch norm use the statistics of the whole
global batch across replicas (keras' `synchronized=True`). Normalisation happens inside the backbone (first layer), so
attacks and epsilon always see raw pixels.
"""
import keras

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
