"""The published ImageNet weights this tool can fetch, with their hashes (plain data)."""

from __future__ import annotations

from dataclasses import dataclass

# Input bands by name, in the order a model's first layer reads them (issue 21)
RGB = ("R", "G", "B")
BGR = ("B", "G", "R")


@dataclass(frozen=True)
class KerasWeightsFile:
    filename: str
    url: str
    file_hash: str  # md5 or sha256, as keras.applications gives it; keras.utils.get_file checks it


@dataclass(frozen=True)
class KerasApplication:
    builder: str  # attribute of keras.applications
    top: KerasWeightsFile
    notop: KerasWeightsFile
    preprocessing: str
    # normalisation epsilon (BatchNorm, LayerNorm): weight files do not store it; the architecture does
    batchnorm_epsilon: float | None = None
    # keras.applications arguments for the runnable model (ConvNeXt: without its Normalization layer)
    builder_kwargs: tuple[tuple[str, object], ...] = ()
    top_layer: str = "predictions"  # the classifier: a file holding it was saved with include_top
    # the model scales raw 0-255 RGB itself (EfficientNet's Rescaling and Normalization layers):
    # those are made identities in the model run for the stack check, which then takes
    # `preprocessing` input, like the target
    input_scaling: bool = False
    bands: tuple[str, ...] = RGB  # the input bands in the order the first layer reads them


@dataclass(frozen=True)
class TorchvisionModel:
    builder: str  # function of torchvision.models
    weights_enum: str  # its weights enum; `.IMAGENET1K_V1.url` names the file and its hash
    preprocessing: str
    batchnorm_epsilon: float = 1e-5  # normalisation epsilon (LayerNorm for ConvNeXt)
    # (regex, replacement) for the published file's old key names, as torchvision's loader does
    renamed_keys: tuple[tuple[str, str], ...] = ()
    bands: tuple[str, ...] = RGB  # every torchvision ImageNet model reads R, G, B


_KERAS_VGG16_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"

KERAS_APPLICATIONS: dict[str, KerasApplication] = {
    "vgg16": KerasApplication(
        builder="VGG16",
        top=KerasWeightsFile("vgg16_weights_tf_dim_ordering_tf_kernels.h5",
                             _KERAS_VGG16_BASE + "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
                             "64373286793e3c8b2b4e3219cbf3544b"),
        notop=KerasWeightsFile("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                               _KERAS_VGG16_BASE + "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                               "6d6bbae143d832006294945121d1f1fc"),
        preprocessing="caffe",
        bands=BGR,  # the Oxford VGG release, ported from Caffe: B, G, R
    ),
}

_KERAS_RESNET_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
KERAS_APPLICATIONS["resnet50"] = KerasApplication(
    builder="ResNet50",
    top=KerasWeightsFile("resnet50_weights_tf_dim_ordering_tf_kernels.h5",
                         _KERAS_RESNET_BASE + "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
                         "2cb95161c43110f7111970584f804107"),
    notop=KerasWeightsFile("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                           _KERAS_RESNET_BASE + "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                           "4d473c1dd8becc155b73f8504c6f6626"),
    preprocessing="caffe",
    batchnorm_epsilon=1.001e-5,
    bands=BGR,
)

_KERAS_DENSENET_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/densenet/"
KERAS_APPLICATIONS["densenet121"] = KerasApplication(
    builder="DenseNet121",
    top=KerasWeightsFile("densenet121_weights_tf_dim_ordering_tf_kernels.h5",
                         _KERAS_DENSENET_BASE + "densenet121_weights_tf_dim_ordering_tf_kernels.h5",
                         "9d60b8095a5708f2dcce2bca79d332c7"),
    notop=KerasWeightsFile("densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
                           _KERAS_DENSENET_BASE + "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
                           "30ee3e1110167f948a6b9946edeeb738"),
    preprocessing="torch",
    batchnorm_epsilon=1.001e-5,
)

_KERAS_CONVNEXT_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/convnext/"
KERAS_APPLICATIONS["convnext_tiny"] = KerasApplication(
    builder="ConvNeXtTiny",
    top=KerasWeightsFile("convnext_tiny.h5", _KERAS_CONVNEXT_BASE + "convnext_tiny.h5",
                         "8ae6e78ce2933352b1ef4008e6dd2f17bc40771563877d156bc6426c7cf503ff"),
    notop=KerasWeightsFile("convnext_tiny_notop.h5", _KERAS_CONVNEXT_BASE + "convnext_tiny_notop.h5",
                           "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1"),
    # the published model normalises inside (raw 0-255 RGB); the model this tool runs is built
    # without that layer, so it takes what torchvision's takes
    preprocessing="torch",
    batchnorm_epsilon=1e-6,
    builder_kwargs=(("include_preprocessing", False),),
    top_layer="convnext_tiny_head_dense",
)

_KERAS_EFFICIENTNET_BASE = "https://storage.googleapis.com/keras-applications/"
KERAS_APPLICATIONS["efficientnet_b0"] = KerasApplication(
    builder="EfficientNetB0",
    top=KerasWeightsFile("efficientnetb0.h5", _KERAS_EFFICIENTNET_BASE + "efficientnetb0.h5",
                         "902e53a9f72be733fc0bcb005b3ebbac"),
    notop=KerasWeightsFile("efficientnetb0_notop.h5", _KERAS_EFFICIENTNET_BASE + "efficientnetb0_notop.h5",
                           "50bc09e76180e00e4465e1a485ddc09d"),
    # the published model takes raw 0-255 RGB: its `rescaling` and `normalization` layers (with
    # the extra rescaling Keras adds for these weights) amount to torch's normalisation
    preprocessing="torch",
    batchnorm_epsilon=1e-3,
    input_scaling=True,
)

_KERAS_MOBILENET_V3_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/"
KERAS_APPLICATIONS["mobilenet_v3_large"] = KerasApplication(
    builder="MobileNetV3Large",
    top=KerasWeightsFile("weights_mobilenet_v3_large_224_1.0_float.h5",
                         _KERAS_MOBILENET_V3_BASE + "weights_mobilenet_v3_large_224_1.0_float.h5",
                         "59e551e166be033d707958cf9e29a6a7"),
    notop=KerasWeightsFile("weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
                           _KERAS_MOBILENET_V3_BASE + "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
                           "07fb09a5933dd0c8eaafa16978110389"),
    preprocessing="tf",  # after its own `rescaling` (made an identity for the stack check): [-1, 1]
    batchnorm_epsilon=1e-3,
    input_scaling=True,
    top_layer="logits",
)

TORCHVISION_MODELS: dict[str, TorchvisionModel] = {
    "vgg16": TorchvisionModel("vgg16", "VGG16_Weights", "torch"),
    "vgg16_bn": TorchvisionModel("vgg16_bn", "VGG16_BN_Weights", "torch"),
    "resnet50": TorchvisionModel("resnet50", "ResNet50_Weights", "torch"),
    "densenet121": TorchvisionModel(
        "densenet121", "DenseNet121_Weights", "torch",
        renamed_keys=((r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12])\.(weight|bias|running_mean|running_var)$",
                       r"\1\2.\3"),)),
    "convnext_tiny": TorchvisionModel("convnext_tiny", "ConvNeXt_Tiny_Weights", "torch", batchnorm_epsilon=1e-6),
    "efficientnet_b0": TorchvisionModel("efficientnet_b0", "EfficientNet_B0_Weights", "torch"),
    "mobilenet_v3_large": TorchvisionModel("mobilenet_v3_large", "MobileNet_V3_Large_Weights", "torch",
                                           batchnorm_epsilon=1e-3),
    "vit_b_16": TorchvisionModel("vit_b_16", "ViT_B_16_Weights", "torch", batchnorm_epsilon=1e-6),  # LayerNorm's
}

PREPROCESSING_HELP = {
    "caffe": "BGR, minus the ImageNet mean [103.939, 116.779, 123.68], no scaling",
    "torch": "RGB / 255, then normalised by mean [0.485, 0.456, 0.406] and std [0.229, 0.224, 0.225]",
    "tf": "RGB scaled to [-1, 1]",
    "none": "raw input, no preprocessing",
}

# The input bands each convention feeds, in order ("none" names no order).
CONVENTION_BANDS: dict[str, tuple[str, ...]] = {"caffe": BGR, "torch": RGB, "tf": RGB}

# Per band, on the raw 0-255 scale: the model is fed x = (raw - mean) / std. caffe: the ImageNet
# mean in B, G, R, no scaling; torch: x / 255 normalised by mean [0.485, 0.456, 0.406] and std
# [0.229, 0.224, 0.225] (times 255 here); tf: x / 127.5 - 1 for every band; none: raw.
CONVENTION_STATS: dict[str, dict[str, tuple[float, float]]] = {
    "caffe": {"B": (103.939, 1.0), "G": (116.779, 1.0), "R": (123.68, 1.0)},
    "torch": {"R": (0.485 * 255, 0.229 * 255), "G": (0.456 * 255, 0.224 * 255), "B": (0.406 * 255, 0.225 * 255)},
}
# conventions that treat every band alike, whatever its name
CONVENTION_ANY_BAND: dict[str, tuple[float, float]] = {"tf": (127.5, 127.5), "none": (0.0, 1.0)}
