"""VGG16's layout, shared by the Keras and PyTorch targets (plain data, no framework)."""

from __future__ import annotations

# Encoder blocks: (block number, filters, convolutions in the block).
VGG16_BLOCKS = ((1, 64, 2), (2, 128, 2), (3, 256, 3), (4, 512, 3), (5, 512, 3))

# SegNet decoder: block -> output filters of its convolutions (the encoder mirrored).
SEGNET_DECODER = ((5, (512, 512, 512)), (4, (512, 512, 256)), (3, (256, 256, 128)), (2, (128, 64)), (1, (64,)))

# U-Net decoder: stage -> (filters, encoder layer it concatenates with).
UNET_DECODER = ((4, 256, "block4_conv3"), (3, 128, "block3_conv3"), (2, 64, "block2_conv2"),
                (1, 32, "block1_conv2"))
