"""``claude-agent-api scripted-model`` (or ``python -m api.scripted_model``) ``--host 127.0.0.1 --port 8788``:
the scripted model on its own."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from api.scripted_model.server import ScriptedModelServer, scripted_model_cli_env


async def serve_until_signalled(host: str, port: int) -> None:
    """Serves until SIGINT or SIGTERM; prints the URL, then the environment a CLI needs, each on a line."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with ScriptedModelServer(host, port) as server:
        print(f"scripted model listening on {server.base_url}", flush=True)
        env = " ".join(f"{k}={v}" for k, v in scripted_model_cli_env(server.base_url).items())
        print(f"point the CLI at it with: {env}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m api.scripted_model", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address")
    parser.add_argument("--port", type=int, default=8788, help="0 picks a free port")
    parser.add_argument("--log-level", default="info", help="debug logs every request with its headers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve_until_signalled(args.host, args.port))


if __name__ == "__main__":
    main()
