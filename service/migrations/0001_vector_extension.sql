-- pgvector: message embeddings and similarity search.
CREATE EXTENSION IF NOT EXISTS vector;
