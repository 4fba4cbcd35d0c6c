"""Models: loading (device, precision), PyPI-packaged GGUF models, tiny random models."""
