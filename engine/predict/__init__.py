"""predict.py: scoring unlabelled images, calibration, defect regions and its report."""
