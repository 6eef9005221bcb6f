"""Model backends: in-process llama.cpp and OpenAI-compatible HTTP endpoints."""
