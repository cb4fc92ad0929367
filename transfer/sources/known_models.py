"""The published ImageNet weights this tool can fetch, with their hashes (plain data)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KerasWeightsFile:
    filename: str
    url: str
    md5: str  # keras.utils.get_file verifies this hash, as keras.applications does


@dataclass(frozen=True)
class KerasApplication:
    builder: str  # attribute of keras.applications
    top: KerasWeightsFile
    notop: KerasWeightsFile
    preprocessing: str
    batchnorm_epsilon: float | None = None  # weight files do not store it; the architecture does


@dataclass(frozen=True)
class TorchvisionModel:
    builder: str  # function of torchvision.models
    weights_enum: str  # its weights enum; `.IMAGENET1K_V1.url` names the file and its hash
    preprocessing: str
    batchnorm_epsilon: float = 1e-5


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
)

TORCHVISION_MODELS: dict[str, TorchvisionModel] = {
    "vgg16": TorchvisionModel("vgg16", "VGG16_Weights", "torch"),
    "vgg16_bn": TorchvisionModel("vgg16_bn", "VGG16_BN_Weights", "torch"),
    "resnet50": TorchvisionModel("resnet50", "ResNet50_Weights", "torch"),
}

PREPROCESSING_HELP = {
    "caffe": "BGR, minus the ImageNet mean [103.939, 116.779, 123.68], no scaling",
    "torch": "RGB / 255, then normalised by mean [0.485, 0.456, 0.406] and std [0.229, 0.224, 0.225]",
    "tf": "RGB scaled to [-1, 1]",
    "none": "raw input, no preprocessing",
}
