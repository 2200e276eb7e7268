"""The encoder: checkpoints, their ONNX Runtime and torch backends, and fingerprinting."""
