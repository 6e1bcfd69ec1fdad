"""OCR core: image decoding, preprocessing, CTC decoding, model registry and the micro-batcher.

Knows nothing of gRPC: the server maps this package's exceptions (``ocr_core.errors``) to
status codes at one boundary.
"""
