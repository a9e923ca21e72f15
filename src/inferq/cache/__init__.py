"""Response caches: L1 exact answers in Redis, L2 semantic matches over MiniLM embeddings."""
