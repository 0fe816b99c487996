#!/usr/bin/env bash
# Train the APRIL-GAN projections on VisA -> the weights used to evaluate on MVTec AD.
#
# As released: the VisA *test* split of all 12 categories (1cls split) is the training set,
# 15 epochs, batch 8, Adam lr 1e-3, no mosaic, a checkpoint per epoch (epoch_N.pth).
# Counterpart of the released visa_pretrained.pth.
#
# Expected on one 24 GB GPU -- ESTIMATED, not measured: about 20-40 min, peak GPU memory about
# 4-6 GB. Basis: 15 epochs x 2,162 images = 32,430 backbone passes of ViT-L/14-336 at 518 px
# (1,369 patch tokens + class token, about 1 TFLOP per image) at roughly 20-40 images/s in fp16
# on an RTX 3090/4090-class card; VisA's large JPEGs (about 1500x1000) are decoded by 4 loader
# workers. --cache_features DIR (pass it after --) skips the backbone after the first epoch but
# needs about 11 MiB of disk per image (fp16 tokens of 4 stages), about 24 GB for VisA.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
# AUG=0: the released VisA script trains without the mosaic (train.py ignores it for VisA anyway)
DS=visa NAME="VisA" OTHER="MVTec AD" EPOCHS="$VISA_EPOCHS" AUG=0 TIME="20-40 min" FOR_FLAG=--mvtec_checkpoint
source "$REPO_ROOT/scripts/_train.sh"
