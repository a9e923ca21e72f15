"""Prompts for a base model (it continues text). Each starts with a different word, so a
server that reuses a cached prompt prefix (llama-cpp-python's does) gains nothing between
consecutive requests; every target evaluates every prompt in full."""

from __future__ import annotations

GENERATION = [
    "The three most important inventions of the twentieth century are",
    "Once upon a time, in a village at the edge of a great forest,",
    "In computer science, a hash table is a data structure that",
    "Photosynthesis is the process by which plants",
    "My favourite recipe for a rainy afternoon starts with",
    "Rivers shape the land around them by",
    "A good night's sleep matters because",
    "Jazz music began in New Orleans when",
    "During the industrial revolution, factories",
    "Volcanoes form where",
    "Every programmer should learn",
    "Honey bees communicate with each other by",
]

# (first, paraphrase) pairs, most from bench/cache_eval/paraphrases.txt: the first is cached, the
# second should be answered by L2 (the lexical guard may refuse some; the run counts them).
PARAPHRASES = [
    ("What is the capital of France?", "Which city is the capital of France?"),
    ("How many legs does a spider have?", "How many legs do spiders have?"),
    ("Who wrote Pride and Prejudice?", "Who is the author of Pride and Prejudice?"),
    (
        "What is the boiling point of water at sea level?",
        "At what temperature does water boil at sea level?",
    ),
    ("How far is the Moon from the Earth?", "What is the distance from the Earth to the Moon?"),
    ("Why is the sky blue?", "What makes the sky look blue?"),
    ("How do I reverse a list in Python?", "How can I reverse a Python list?"),
    ("What is the speed of light?", "How fast does light travel?"),
]
