"""Deployment: ONNX export, its sidecar, and scoring with onnxruntime or OpenVINO."""
