"""How sparse and how peaked a network's activations are, layer by layer."""

import numpy as np
import keras

from keras_hebb.hah_cost import hah_cost
from keras_hebb.layers.adaptive_threshold import AdaptiveThreshold
from keras_hebb.layers.fractional_threshold import FractionalThreshold
from keras_hebb.layers.hah_block import HaHBlock


def activation_layers(model):
    """The layers whose outputs are a network's activations, in model order.

    A `HaHBlock` (its thresholded output), a ReLU layer, and a stand-alone
    threshold layer. In the standard VGG block conv -> ReLU -> BN the ReLU
    output is the activation; batch norm only shifts and scales it per
    channel.
    """
    chosen = []
    for layer in model.layers:
        relu = isinstance(layer, keras.layers.ReLU) or (
            isinstance(layer, keras.layers.Activation)
            and getattr(layer.activation, "__name__", "") == "relu"
        )
        if relu or isinstance(layer, (HaHBlock, FractionalThreshold, AdaptiveThreshold)):
            chosen.append(layer)
    return chosen


def activation_statistics(model, images, layers=None, batch_size=256, ratio=0.1):
    """Per-layer sparsity and activation disparity on a batch of inputs.

    Args:
        model: a functional Keras model.
        images: array of inputs, as the model takes them.
        layers: layers (or names) to measure; defaults to
            `activation_layers(model)`.
        batch_size: inputs per forward pass. Defaults to `256`.
        ratio: winner fraction for the disparity. Defaults to `0.1`.

    Returns:
        A list, in model order, of dicts with `layer` (name),
        `nonzero_fraction` (fraction of activations that are not zero) and
        `disparity` (at each position, mean of the top `ceil(ratio * C)`
        channel values minus the mean of the others, averaged over
        positions and images: the paper's "activation disparity").
    """
    if layers is None:
        layers = activation_layers(model)
    layers = [model.get_layer(l) if isinstance(l, str) else l for l in layers]
    if not layers:
        raise ValueError(
            f"Model '{model.name}' has no activation layers to measure "
            "(HaHBlock, ReLU or threshold layers)."
        )
    try:
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        probe = keras.Model(inputs, [layer.output for layer in layers])
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"activation_statistics needs a functional model; could not read "
            f"the layer outputs of model '{model.name}': {error}"
        ) from error
    images = np.asarray(images)
    nonzero = np.zeros(len(layers))
    total = np.zeros(len(layers))
    disparity = np.zeros(len(layers))
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        outputs = probe(batch, training=False)
        if len(layers) == 1:
            outputs = [outputs]
        for i, out in enumerate(outputs):
            out = keras.ops.convert_to_numpy(out)
            nonzero[i] += np.count_nonzero(out)
            total[i] += out.size
            disparity[i] += float(hah_cost(out, ratio=ratio)) * len(batch)
    return [
        {
            "layer": layer.name,
            "nonzero_fraction": float(nonzero[i] / total[i]),
            "disparity": float(disparity[i] / len(images)),
        }
        for i, layer in enumerate(layers)
    ]
