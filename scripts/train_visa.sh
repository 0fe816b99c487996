#!/usr/bin/env bash
# Train the APRIL-GAN projections on VisA -> the weights used to evaluate on MVTec AD.
#
# As released: the VisA *test* split of all 12 categories (1cls split) is the training set,
# 15 epochs, batch 8, Adam lr 1e-3, no mosaic, a checkpoint per epoch (epoch_N.pth).
# Counterpart of the released visa_pretrained.pth.
#
# Expected time and GPU memory: the README's protocol table ("2. The protocol"), the one place
# the estimates are stated, with their basis.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
# AUG=0: the released VisA script trains without the mosaic (train.py ignores it for VisA anyway)
DS=visa NAME="VisA" OTHER="MVTec AD" EPOCHS="$VISA_EPOCHS" AUG=0 FOR_FLAG=--mvtec_checkpoint
source "$REPO_ROOT/scripts/_train.sh"
