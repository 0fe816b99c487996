"""The shared core of every job: model building, batched inference, the feature store, thresholds."""
