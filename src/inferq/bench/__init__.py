"""`inferq bench`: a load generator that measures inferq beside in-process llama.cpp and LiteLLM."""
