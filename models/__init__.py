"""CLIP backbone, per-stage projections and the anomaly-map heads."""
