"""The data artefacts (cohort, timelines, sample index, tokenizer, instructions, reasoning data), each built
from a composed config by one module here; ``graph`` declares them and runs ``synthesize.py``'s steps."""
