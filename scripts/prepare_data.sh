#!/usr/bin/env bash
# Prepare MVTec AD and VisA for the reproduction scripts: verify the archives' sha256, extract
# them, and write meta.json (VisA from the split_csv/1cls.csv in its tar). A thin wrapper around
# scripts/prepare_data.py; every option is passed through (see --help).
#
#   bash scripts/prepare_data.sh --archives ~/Downloads      # mvtec_anomaly_detection.tar.xz,
#                                                            # VisA_20220922.tar (or folders)
#   bash scripts/prepare_data.sh --download                  # when online
#
# Expected time: the README ("1. Data"), the one place it is stated. Disk: about 7 GB of
# archives + about 12 GB extracted. No GPU needed.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
APRILGAN_PROG="bash scripts/prepare_data.sh" exec "${PYTHON:-python}" "$HERE/prepare_data.py" "$@"
