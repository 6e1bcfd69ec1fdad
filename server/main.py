"""``ocr-server``: parse flags/env, configure logging, serve until SIGTERM or SIGINT
(or, with ``--processes N``, supervise N server processes that share the port)."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from ocr_core.errors import OcrError
from ocr_server.config import parse_config
from ocr_server.logs import configure_logging, quiet_grpc_core


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    config = parse_config(argv)
    configure_logging(config.log_level, config.log_format)
    quiet_grpc_core()
    # Imported only now: gRPC reads GRPC_VERBOSITY once, when it is imported.
    from ocr_server.app import ListenError, serve
    from ocr_server.security import SecurityConfigError
    from ocr_server.supervisor import supervise

    if config.processes > 1:
        return supervise(config, argv)
    try:
        asyncio.run(serve(config))
    except (OcrError, SecurityConfigError, ListenError) as exc:  # say why, no traceback
        logging.getLogger("ocr_server").error("cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
