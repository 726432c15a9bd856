"""The conversation service: conversations and messages in PostgreSQL with pgvector."""

__version__ = "0.3.0"  # pyproject.toml's (a test keeps them equal)
