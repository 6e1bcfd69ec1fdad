"""gRPC server for ``ocr.v1.OcrService`` (installed as ``ocr_server``).

``ocr_server.app.serve`` runs the server; ``ocr_server.main`` is the ``ocr-server`` command.
"""
