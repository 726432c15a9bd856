"""The conversation service: conversations and messages in PostgreSQL with pgvector."""

__version__ = "0.1.0"
