#!/usr/bin/env bash
# Train the APRIL-GAN projections on MVTec AD -> the weights used to evaluate on VisA.
#
# As released: the MVTec *test* split of all 15 categories is the training set, 3 epochs,
# batch 8, Adam lr 1e-3, 2x2 mosaic augmentation with probability 0.2, a checkpoint per epoch
# (epoch_N.pth). Counterpart of the released mvtec_pretrained.pth.
#
# Expected on one 24 GB GPU -- ESTIMATED, not measured: about 5-10 min, peak GPU memory about
# 4-6 GB. Basis: 3 epochs x 1,725 images = 5,175 backbone passes of ViT-L/14-336 at 518 px
# (37x37 = 1,369 patch tokens + class token, about 1 TFLOP per image), at roughly 20-40 images/s
# in fp16 on an RTX 3090/4090-class card, plus PNG decoding in 4 loader workers. The frozen ViT-L
# weights take 1.7 GB; activations are small because only the projections get gradients.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
DS=mvtec NAME="MVTec AD" OTHER="VisA" EPOCHS="$MVTEC_EPOCHS" AUG="$AUG_RATE" TIME="5-10 min" FOR_FLAG=--visa_checkpoint
source "$REPO_ROOT/scripts/_train.sh"
