"""Shipping a model: export (ONNX) and the HTTP server."""
