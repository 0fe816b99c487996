#!/usr/bin/env bash
# Train the APRIL-GAN projections on MVTec AD -> the weights used to evaluate on VisA.
#
# As released: the MVTec *test* split of all 15 categories is the training set, 3 epochs,
# batch 8, Adam lr 1e-3, 2x2 mosaic augmentation with probability 0.2, a checkpoint per epoch
# (epoch_N.pth). Counterpart of the released mvtec_pretrained.pth.
#
# Expected time and GPU memory: the README's protocol table ("2. The protocol"), the one place
# the estimates are stated, with their basis.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
DS=mvtec NAME="MVTec AD" OTHER="VisA" EPOCHS="$MVTEC_EPOCHS" AUG="$AUG_RATE" FOR_FLAG=--visa_checkpoint
source "$REPO_ROOT/scripts/_train.sh"
