#!/usr/bin/env python3
"""``make up``: the service on the embedded PostgreSQL at http://127.0.0.1:$PORT.

Uses ``API_TOKEN`` from the environment or generates one and prints it, with curl lines
to try. Runs in the foreground until Ctrl-C; data stays under ``.local/``.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "service"))


def main() -> int:
    from conversations.__main__ import main as serve

    port = os.environ.setdefault("PORT", "8080")
    os.environ.setdefault("HOST", "127.0.0.1")
    os.environ.setdefault("LOCAL_DATA_DIR", str(ROOT / ".local"))
    generated = "API_TOKEN" not in os.environ
    token = os.environ.setdefault("API_TOKEN", secrets.token_urlsafe(24))
    base = f"http://127.0.0.1:{port}"
    print(
        f"""
Conversation service on the embedded PostgreSQL (data in {os.environ["LOCAL_DATA_DIR"]})
  URL:       {base}   (API docs at {base}/docs)
  API token: {token}{"   (generated; set API_TOKEN to choose your own)" if generated else ""}

Try, in another shell:
  export API_TOKEN='{token}'
  curl -s {base}/health
  curl -s -X POST {base}/conversations -H "Authorization: Bearer $API_TOKEN" \\
       -H 'Content-Type: application/json' -d '{{"conversation_id": "demo", "title": "Demo"}}'
  curl -s -X POST {base}/conversations/demo/messages -H "Authorization: Bearer $API_TOKEN" \\
       -H 'Content-Type: application/json' -d '{{"role": "user", "content": "Hello, pgvector"}}'
  curl -s {base}/conversations -H "Authorization: Bearer $API_TOKEN"
  curl -s '{base}/search?q=hello' -H "Authorization: Bearer $API_TOKEN"
  curl -s -X DELETE {base}/conversations/demo -H "Authorization: Bearer $API_TOKEN"

Ctrl-C stops the service (the embedded database keeps running for the next start).
""",
        flush=True,
    )
    try:
        return serve()
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
