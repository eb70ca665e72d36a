"""The OpenAI-compatible server behind `fincocktail serve`: HTTP handling, request batching, streaming, text completions."""
